"""The HTTP sender: ``HttpSender.send(delivery)`` makes one signed attempt and raises on failure.

One connection pool for the process (``fanout.http.client``), limited per host and in total so that
one slow lane, capped by its own ``max_in_flight``, cannot take every connection. Timeouts are explicit
per subscription, redirects are never followed, and every connection goes through the SSRF guard
(``GuardedResolver`` for names, ``AddressPolicy.check_literal`` for IP literals).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from fanout import __version__
from fanout.config import DeliverySettings
from fanout.errors import DeliveryError, PermanentDelivery, RetryableDelivery
from fanout.http.classify import classify
from fanout.http.client import HttpClient, HttpProtocolError, Origin, ServerDisconnected
from fanout.http.signing import Signer
from fanout.http.ssrf import AddressPolicy, AddressRefused, GuardedResolver
from fanout.model import Delivery
from fanout.subscription import Subscription


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
        self._tls: ssl.SSLContext | None = None
        self._client_tls: dict[tuple[str, str], ssl.SSLContext] = {}
        self._targets: dict[tuple[str, object], _Target] = {}
        self._signer = Signer()
        self._user_agent = f"{settings.user_agent}/{__version__}"

    async def start(self) -> None:
        ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
        self._tls = ssl.create_default_context(cafile=ca)
        self._client = HttpClient(
            self._resolver,
            limit=self.settings.max_connections,
            limit_per_host=self.settings.connections_per_host,
            dns_ttl=self.settings.dns_cache_seconds,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def refusal(self, sub: Subscription) -> str | None:
        """Why this subscription's URL may not be contacted at all (scheme, IP literal), or None."""
        return self._target(sub).refusal

    def _target(self, sub: Subscription) -> _Target:
        key = (sub.url, sub.client_certificate)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = self._resolve_target(sub)
        return target

    def _resolve_target(self, sub: Subscription) -> _Target:
        parts = urlsplit(sub.url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        tls = self._tls_for(sub) if https else None
        origin = Origin(parts.scheme, host, parts.port or (443 if https else 80), tls)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
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
        key = (cert.cert_file, cert.key_file)
        context = self._client_tls.get(key)
        if context is None:
            ca = str(self.settings.ca_bundle) if self.settings.ca_bundle else None
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert.cert_file, cert.key_file)
            self._client_tls[key] = context
        return context

    def headers(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        sub = delivery.subscription
        event = delivery.event
        timestamp = int(time.time())
        headers = dict(sub.headers) if sub.headers else {}
        headers["content-type"] = event.content_type if sub.payload == "raw" else "application/json"
        headers["user-agent"] = self._user_agent
        headers["webhook-id"] = event.id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = self._signer.sign(sub.signing_keys, event.id, timestamp, body)
        if delivery.traceparent:
            headers["traceparent"] = delivery.traceparent
        return headers

    async def send(self, delivery: Delivery) -> None:
        """One attempt. Returns on 2xx; raises a DeliveryError subclass otherwise."""
        sub = delivery.subscription
        target = self._target(sub)
        if target.refusal is not None:
            raise PermanentDelivery(target.refusal)
        client = self._client
        assert client is not None, "HttpSender.start() was not called"
        body = delivery.event.payload(sub.payload)
        head = client.request_head(target.origin, target.path, self.headers(delivery, body), len(body))
        try:
            response = await client.post(target.origin, head, body, sub.timeout)
        except AddressRefused as exc:
            raise PermanentDelivery(str(exc)) from None
        except TimeoutError:
            raise RetryableDelivery(f"timeout after {sub.timeout:g}s") from None
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
        error: DeliveryError | None = classify(
            response.status, response.retry_after, sub.retry.retryable_statuses
        )
        if error is not None:
            raise error
