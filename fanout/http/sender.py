"""The HTTP sender: ``HttpSender.send(delivery)`` makes one signed attempt and raises on failure.

It builds and signs the request; the transport (``delivery.transport``: ``fanout.http.fast`` or
``fanout.http.aiohttp_transport``, one for the process) does the I/O, with connection limits per host
and in total so that one slow lane, capped by its own ``max_in_flight``, cannot take every connection.
Timeouts are explicit (``fanout.http.options.timeouts``), redirects are never followed, and every
connection goes through the SSRF guard (``AddressPolicy`` on every address; for IP literals also here,
when a subscription's target is prepared).

What is fixed per subscription (its URL, TLS context, its own headers and the User-Agent, checked for the
wire once, and its timeouts) is prepared when a routing table is installed; a header that cannot go on
the wire makes the subscription's deliveries fail permanently, with the header named.

Each attempt is signed with the subscription's current secrets and Ed25519 keys, and its previous ones
that have not expired (a rotation's grace period), and carries the subscription's outbound auth
(``fanout.http.auth``): an OAuth endpoint that answers 401 gets one more try with a fresh token within
the same attempt. Token requests are control-plane traffic and go through an aiohttp session (same
resolver, same guard).

Transport errors become delivery errors: ``PoolTimeout`` is ``NotAttempted`` (the lane spills it: not an
attempt, not a breaker failure); ``EgressRefused`` and ``InvalidHeader`` are permanent; the rest are
retryable.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yarl import URL

from fanout import __version__
from fanout.config import DeliverySettings
from fanout.http.auth import OutboundAuth
from fanout.http.classify import classify
from fanout.http.fields import HeaderBlock, RequestTarget
from fanout.http.options import open_transport, timeouts, transport_options
from fanout.http.signing import Keyed, Signer, sign_with
from fanout.http.ssrf import AddressPolicy, AddressRefused, GuardedResolver
from fanout.http.transport import (
    ConnectTimeout,
    EgressRefused,
    InvalidHeader,
    Origin,
    PoolTimeout,
    ReadTimeout,
    Request,
    Timeouts,
    Transport,
    TransportError,
)
from fanout.model.attempt import AttemptResult
from fanout.model.cert_paths import CertificatePathRefused, resolve_cert_file
from fanout.model.endpoint_auth import HeaderAuth
from fanout.model.errors import DeliveryError, NotAttempted, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.subscription import ClientCertificate, Subscription

SENDER_HEADERS = frozenset({"content-type", "user-agent", "traceparent"})


@dataclass(frozen=True, slots=True)
class _Target:
    """Where and how a subscription's deliveries go, worked out once per subscription version: what a
    delivery needs of its subscription, in one slotted object, so that a send reads none of the
    subscription's (some 35) fields. ``signing`` and ``ed25519``: the HMAC states and the Ed25519 keys
    to sign with, each None while a rotation's previous keys are still valid (they depend on the send
    time)."""

    sub: Subscription
    origin: Origin
    target: RequestTarget
    fixed: HeaderBlock
    timeouts: Timeouts
    refusal: str | None
    authenticated: bool
    payload: str
    signing: tuple[Keyed, ...] | None
    ed25519: tuple[Ed25519PrivateKey, ...] | None


class HttpSender:
    """Sends deliveries. ``start()`` inside the running loop before the first ``send``."""

    def __init__(
        self,
        settings: DeliverySettings,
        resolver: AbstractResolver | None = None,
        body_prefix: int | None = None,
    ) -> None:
        """``body_prefix``: bytes of each response body kept in ``Delivery.result`` (the delivery
        history's ``history.response_bytes``); None: no ``Delivery.result`` at all (history off)."""
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_cidrs)
        self._inner_resolver = resolver
        self._resolver = GuardedResolver(self.policy, resolver)
        self.transport: Transport | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None
        self._client_tls: dict[tuple[str, str], ssl.SSLContext] = {}
        self._targets: dict[str, _Target] = {}
        self._origins: dict[Origin, Origin] = {}
        self._timeouts: dict[float, Timeouts] = {}
        self._signer = Signer()
        self._user_agent = f"{settings.user_agent}/{__version__}"
        self.body_prefix = body_prefix
        self.auth = OutboundAuth(self._live_session, self.policy, settings.allow_http)

    def _live_session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "HttpSender.start() was not called"
        return self._session

    async def start(self) -> None:
        ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
        self._tls = ssl.create_default_context(cafile=ca)
        options = transport_options(self.settings, self.policy, self._inner_resolver, self.body_prefix or 0)
        self.transport = open_transport(self.settings.transport, options)
        await self.transport.start()
        connector = aiohttp.TCPConnector(
            limit=16,
            resolver=self._resolver,
            ttl_dns_cache=int(self.settings.dns_cache_seconds) or None,
            use_dns_cache=self.settings.dns_cache_seconds > 0,
            ssl=self._tls,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=30),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
            self.transport = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def refusal(self, sub: Subscription) -> str | None:
        """Why this subscription's deliveries cannot be sent (scheme, IP literal, a header), or None."""
        return self._target(sub).refusal

    def prepare(self, subs: Iterable[Subscription]) -> None:
        """Prepare the targets of ``subs`` now (URL parsing, TLS context, the literal-address check, the
        headers checked for the wire), when a routing table is installed, rather than on each
        subscription's first delivery."""
        for sub in subs:
            with contextlib.suppress(PermanentDelivery):  # raised again, and settled, on delivery
                self._target(sub)

    def _target(self, sub: Subscription) -> _Target:
        target = self._targets.get(sub.id)
        if target is None or target.sub is not sub:
            target = self._targets[sub.id] = self._resolve_target(sub)
        return target

    def _resolve_target(self, sub: Subscription) -> _Target:
        try:
            url = URL(sub.url)  # yarl: IDNA host, percent-encoded path and query
            host, target = url.raw_host or "", RequestTarget.build(url.raw_path_qs or "/")
        except (ValueError, UnicodeError, InvalidHeader) as exc:
            raise PermanentDelivery(f"the URL cannot be sent: {type(exc).__name__}") from None
        https = url.scheme == "https"
        tls = self._tls_for(sub) if https else None
        origin = Origin(url.scheme, host, url.port or (443 if https else 80), tls)
        origin = self._origins.setdefault(origin, origin)
        refusal: str | None = None
        fixed = HeaderBlock.EMPTY
        if not https and not self.settings.allow_http:
            refusal = "http:// endpoints are refused; set delivery.allow_http to allow them"
        else:
            try:
                self.policy.check_literal(host)
                fixed = HeaderBlock.build(self._fixed_headers(sub))
            except AddressRefused as exc:
                refusal = str(exc)
            except InvalidHeader as exc:
                refusal = f"refused header: {exc}"
        seconds = sub.timeout
        timeouts_ = self._timeouts.get(seconds)
        if timeouts_ is None:
            timeouts_ = self._timeouts[seconds] = timeouts(self.settings, seconds)
        return _Target(
            sub,
            origin,
            target,
            fixed,
            timeouts_,
            refusal,
            sub.auth is not None,
            sub.payload,
            None if sub.previous_secrets else self._signer.states(sub.signing_keys),
            None if sub.previous_ed25519_keys else sub.ed25519_signing_keys,
        )

    def _fixed_headers(self, sub: Subscription) -> list[tuple[str, str]]:
        """The subscription's own headers (less those the sender sets) and the User-Agent."""
        taken = set(SENDER_HEADERS)
        if sub.auth is not None:
            taken.add(sub.auth.name.lower() if isinstance(sub.auth, HeaderAuth) else "authorization")
        pairs = [(name, value) for name, value in sub.headers.items() if name.lower() not in taken]
        pairs.append(("user-agent", self._user_agent))
        return pairs

    def _tls_for(self, sub: Subscription) -> ssl.SSLContext:
        cert = sub.client_certificate
        if cert is None:
            assert self._tls is not None, "HttpSender.start() was not called"
            return self._tls
        key = (cert.cert_file or _digest(cert.cert_pem), cert.key_file or _digest(cert.key_pem))
        context = self._client_tls.get(key)
        if context is None:
            ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
            context = ssl.create_default_context(cafile=ca)
            try:
                _load_client_certificate(context, cert, self.settings.client_cert_dir)
            except CertificatePathRefused as exc:
                raise PermanentDelivery(f"client certificate: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                raise PermanentDelivery(
                    f"client certificate cannot be loaded: {type(exc).__name__}"
                ) from None
            self._client_tls[key] = context
        return context

    def headers(
        self,
        delivery: Delivery,
        body: bytes,
        auth: dict[str, str] | None = None,
        now: float | None = None,
        target: _Target | None = None,
    ) -> list[tuple[str, str]]:
        """The headers of one attempt that vary per delivery (the transport checks them for the wire),
        signed at ``now`` (default: the current time); ``target``: the subscription's, when known."""
        sub = delivery.subscription
        event = delivery.event
        if now is None:
            now = time.time()
        timestamp = int(now)
        headers = list(auth.items()) if auth else []
        if target is None:
            payload: str = sub.payload
            signing, ed25519 = None, None
        else:
            payload, signing, ed25519 = target.payload, target.signing, target.ed25519
        raw = payload == "raw" and delivery.body is None
        if signing is None:
            signing = self._signer.states(sub.signing_keys_at(now))
        if ed25519 is None:
            ed25519 = sub.ed25519_keys_at(now)
        headers += (
            ("content-type", event.content_type if raw else "application/json"),
            ("webhook-id", event.id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", sign_with(signing, event.id, timestamp, body, ed25519)),
        )
        if delivery.traceparent:
            headers.append(("traceparent", delivery.traceparent))
        return headers

    async def send(self, delivery: Delivery) -> int:
        """One attempt. Returns the status on 2xx; raises a DeliveryError subclass otherwise. What the
        attempt came to is left in ``delivery.result`` (None when no request went out)."""
        status, retry_after = await self.attempt(delivery)
        if 200 <= status < 300:
            return status
        error: DeliveryError | None = classify(
            status, retry_after, delivery.subscription.retry.retryable_statuses
        )
        if error is None:
            return status
        try:
            raise error
        finally:
            del error  # no frame -> local -> exception -> traceback -> frame cycle left to the collector

    async def attempt(self, delivery: Delivery, max_seconds: float | None = None) -> tuple[int, str | None]:
        """One attempt: (status, Retry-After); raises DeliveryError when no response came."""
        delivery.result = None
        sub = delivery.subscription
        target = self._target(sub)
        if target.refusal is not None:
            raise PermanentDelivery(target.refusal)
        limits = target.timeouts
        if max_seconds is not None and max_seconds < limits.total:
            limits = timeouts(self.settings, max_seconds)
        if not target.authenticated:
            return await self._post(delivery, target, None, limits)
        auth = await self.auth.headers(sub)
        status, retry_after = await self._post(delivery, target, auth, limits)
        if status == 401 and self.auth.invalidate(sub, auth):
            status, retry_after = await self._post(delivery, target, await self.auth.headers(sub), limits)
        return status, retry_after

    async def _post(
        self, delivery: Delivery, target: _Target, auth: dict[str, str] | None, limits: Timeouts
    ) -> tuple[int, str | None]:
        transport = self.transport
        assert transport is not None, "HttpSender.start() was not called"
        body = delivery.body
        if body is None:
            body = delivery.event.payload(target.payload)
        now = time.time()
        request = Request(
            target.origin, target.target, self.headers(delivery, body, auth, now, target), body, target.fixed
        )
        started = time.monotonic()
        try:
            response = await transport.send(request, limits)
        except TransportError as exc:
            if self.body_prefix is not None and not isinstance(exc, _NOT_SENT):
                delivery.result = AttemptResult(
                    int(now), time.monotonic() - started, error_class=type(exc).__name__
                )
            raise delivery_error(exc, limits) from None
        status = response.status
        if self.body_prefix is not None:
            delivery.result = AttemptResult(
                int(now),
                time.monotonic() - started,
                status,
                response.headers,
                response.body,
                response.body_size,
            )
        if 200 <= status < 300:
            return status, None
        retry_after = response.header(b"retry-after")
        return status, retry_after.decode("latin-1") if retry_after is not None else None


# Transport errors raised before a byte of the request went out: no attempt to record.
_NOT_SENT = (PoolTimeout, InvalidHeader, EgressRefused)


def delivery_error(exc: TransportError, limits: Timeouts) -> DeliveryError:
    """What a transport failure means for the delivery (the text becomes its last error)."""
    if isinstance(exc, PoolTimeout):
        return NotAttempted(f"pool timeout: no connection slot within {limits.pool:g}s")
    if isinstance(exc, EgressRefused | InvalidHeader):
        return PermanentDelivery(str(exc))
    if isinstance(exc, ReadTimeout):
        return RetryableDelivery(f"timeout after {limits.total:g}s: {exc}")
    if isinstance(exc, ConnectTimeout):
        return RetryableDelivery(f"timeout: {exc}")
    return RetryableDelivery(str(exc))


def _digest(text: str | None) -> str:
    return "pem:" + hashlib.sha256((text or "").encode()).hexdigest()


def _load_client_certificate(context: ssl.SSLContext, cert: ClientCertificate, cert_dir: Path | None) -> None:
    """Load files from under ``cert_dir`` only (``fanout.model.cert_paths``); inline PEM through a private
    temporary directory, removed at once."""
    cert_file = str(resolve_cert_file(cert_dir, cert.cert_file)) if cert.cert_file else None
    key_file = str(resolve_cert_file(cert_dir, cert.key_file)) if cert.key_file else None
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
        return
    with tempfile.TemporaryDirectory(prefix="fanout-tls-") as tmp:
        cert_path = cert_file or _write_private(Path(tmp) / "cert.pem", cert.cert_pem or "")
        key_path = key_file or _write_private(Path(tmp) / "key.pem", cert.key_pem or "")
        context.load_cert_chain(cert_path, key_path)


def _write_private(path: Path, text: str) -> str:
    path.touch(mode=0o600)
    path.write_text(text)
    return str(path)
