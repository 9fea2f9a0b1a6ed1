"""The HTTP sender: ``HttpSender.send(delivery)`` makes one signed attempt and raises on failure.

One connection pool for the process (``fanout.http.client``), limited per host and in total so that
one slow lane, capped by its own ``max_in_flight``, cannot take every connection. Timeouts are explicit
per subscription, redirects are never followed, and every connection goes through the SSRF guard
(``GuardedResolver`` for names, ``AddressPolicy.check_literal`` for IP literals).

Each attempt is signed with the subscription's current secrets and Ed25519 keys, and its previous ones
that have not expired (a rotation's grace period), and carries the subscription's outbound auth
(``fanout.http.auth``): an OAuth endpoint that answers 401 gets one more try with a fresh token within
the same attempt. Token requests are control-plane traffic and go through an aiohttp session (same
resolver, same guard).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from fanout import __version__
from fanout.cert_paths import CertificatePathRefused, resolve_cert_file
from fanout.config import DeliverySettings
from fanout.errors import DeliveryError, PermanentDelivery, RetryableDelivery
from fanout.http.auth import OutboundAuth
from fanout.http.classify import classify
from fanout.http.client import HttpClient, HttpProtocolError, Origin, ServerDisconnected
from fanout.http.signing import Signer
from fanout.http.ssrf import AddressPolicy, AddressRefused, GuardedResolver
from fanout.model import Delivery
from fanout.subscription import ClientCertificate, Subscription


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a subscription's deliveries go, worked out once per URL and certificate."""

    origin: Origin
    path: str
    refusal: str | None


class HttpSender:
    """Sends deliveries. ``start()`` inside the running loop before the first ``send``."""

    def __init__(self, settings: DeliverySettings, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_cidrs)
        self._resolver = GuardedResolver(self.policy, resolver)
        self._client: HttpClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None
        self._client_tls: dict[tuple[str, str], ssl.SSLContext] = {}
        self._targets: dict[tuple[str, object], _Target] = {}
        self._origins: dict[Origin, Origin] = {}
        self._signer = Signer()
        self._user_agent = f"{settings.user_agent}/{__version__}"
        self.auth = OutboundAuth(self._live_session, self.policy, settings.allow_http)

    def _live_session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "HttpSender.start() was not called"
        return self._session

    async def start(self) -> None:
        ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
        self._tls = ssl.create_default_context(cafile=ca)
        self._client = HttpClient(
            self._resolver,
            limit=self.settings.max_connections,
            limit_per_host=self.settings.connections_per_host,
            dns_ttl=self.settings.dns_cache_seconds,
        )
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
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def refusal(self, sub: Subscription) -> str | None:
        """Why this subscription's URL may not be contacted at all (scheme, IP literal), or None."""
        return self._target(sub).refusal

    def prepare(self, subs: Iterable[Subscription]) -> None:
        """Resolve the targets of ``subs`` now (URL parsing, TLS context, the literal-address check), when a
        routing table is installed, rather than on each subscription's first delivery."""
        for sub in subs:
            with contextlib.suppress(PermanentDelivery):  # raised again, and settled, on delivery
                self._target(sub)

    def _target(self, sub: Subscription) -> _Target:
        key = (sub.url, sub.client_certificate)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = self._resolve_target(sub)
        return target

    def _resolve_target(self, sub: Subscription) -> _Target:
        try:
            url = URL(sub.url)  # yarl: IDNA host, percent-encoded path and query
            host, path = url.raw_host or "", url.raw_path_qs or "/"
            path.encode("ascii")
        except (ValueError, UnicodeError) as exc:
            raise PermanentDelivery(f"the URL cannot be sent: {type(exc).__name__}") from None
        https = url.scheme == "https"
        tls = self._tls_for(sub) if https else None
        origin = Origin(url.scheme, host, url.port or (443 if https else 80), tls)
        origin = self._origins.setdefault(origin, origin)
        refusal: str | None = None
        if not https and not self.settings.allow_http:
            refusal = "http:// endpoints are refused; set delivery.allow_http to allow them"
        else:
            try:
                self.policy.check_literal(host)
            except AddressRefused as exc:
                refusal = str(exc)
        return _Target(origin, path, refusal)

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

    def headers(self, delivery: Delivery, body: bytes, auth: dict[str, str] | None = None) -> dict[str, str]:
        sub = delivery.subscription
        event = delivery.event
        now = time.time()
        timestamp = int(now)
        headers = dict(sub.headers) if sub.headers else {}
        if auth:
            headers.update(auth)
        raw = sub.payload == "raw" and delivery.body is None
        headers["content-type"] = event.content_type if raw else "application/json"
        headers["user-agent"] = self._user_agent
        headers["webhook-id"] = event.id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = self._signer.sign(
            sub.signing_keys_at(now), event.id, timestamp, body, sub.ed25519_keys_at(now)
        )
        if delivery.traceparent:
            headers["traceparent"] = delivery.traceparent
        return headers

    async def send(self, delivery: Delivery) -> int:
        """One attempt. Returns the status on 2xx; raises a DeliveryError subclass otherwise."""
        status, retry_after = await self.attempt(delivery)
        error: DeliveryError | None = classify(
            status, retry_after, delivery.subscription.retry.retryable_statuses
        )
        if error is not None:
            raise error
        return status

    async def attempt(self, delivery: Delivery, max_seconds: float | None = None) -> tuple[int, str | None]:
        """One attempt: (status, Retry-After); raises DeliveryError when no response came."""
        sub = delivery.subscription
        target = self._target(sub)
        if target.refusal is not None:
            raise PermanentDelivery(target.refusal)
        seconds = sub.timeout if max_seconds is None else min(max_seconds, sub.timeout)
        if sub.auth is None:
            return await self._post(delivery, target, None, seconds)
        auth = await self.auth.headers(sub)
        status, retry_after = await self._post(delivery, target, auth, seconds)
        if status == 401 and self.auth.invalidate(sub, auth):
            status, retry_after = await self._post(delivery, target, await self.auth.headers(sub), seconds)
        return status, retry_after

    async def _post(
        self, delivery: Delivery, target: _Target, auth: dict[str, str] | None, seconds: float
    ) -> tuple[int, str | None]:
        client = self._client
        assert client is not None, "HttpSender.start() was not called"
        body = delivery.body
        if body is None:
            body = delivery.event.payload(delivery.subscription.payload)
        head = client.request_head(target.origin, target.path, self.headers(delivery, body, auth), len(body))
        try:
            response = await client.post(target.origin, head, body, seconds)
        except AddressRefused as exc:
            raise PermanentDelivery(str(exc)) from None
        except TimeoutError:
            raise RetryableDelivery(f"timeout after {seconds:g}s") from None
        except ssl.SSLCertVerificationError as exc:
            raise RetryableDelivery(f"TLS certificate error: {exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            raise RetryableDelivery(f"TLS error: {exc.reason or exc}") from None
        except ServerDisconnected:
            raise RetryableDelivery("server disconnected") from None
        except HttpProtocolError as exc:
            raise RetryableDelivery(str(exc)) from None
        except socket.gaierror as exc:
            raise RetryableDelivery(f"DNS error: {exc.strerror or exc}") from None
        except OSError as exc:
            raise RetryableDelivery(f"connection error: {exc.strerror or exc}") from None
        return response.status, response.retry_after


def _digest(text: str | None) -> str:
    return "pem:" + hashlib.sha256((text or "").encode()).hexdigest()


def _load_client_certificate(context: ssl.SSLContext, cert: ClientCertificate, cert_dir: Path | None) -> None:
    """Load files from under ``cert_dir`` only (``fanout.cert_paths``); inline PEM through a private
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
