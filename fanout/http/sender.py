"""The HTTP sender: ``HttpSender.send(delivery)`` makes one signed attempt and raises on failure.

One ``ClientSession`` for the process. Its connector limits connections per host (and in total) so
that one slow lane, capped by its own ``max_in_flight``, cannot take every connection. Timeouts are
explicit per subscription, redirects are never followed, and every connection goes through the SSRF
guard (``GuardedResolver`` for names, ``AddressPolicy.check_literal`` for IP literals).
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from fanout import __version__
from fanout.config import DeliverySettings
from fanout.errors import DeliveryError, PermanentDelivery, RetryableDelivery
from fanout.http.classify import classify
from fanout.http.signing import sign
from fanout.http.ssrf import AddressPolicy, AddressRefused, GuardedResolver
from fanout.model import Delivery
from fanout.subscription import Subscription

MAX_RESPONSE_READ = 64 * 1024


class HttpSender:
    """Sends deliveries. ``start()`` inside the running loop before the first ``send``."""

    def __init__(self, settings: DeliverySettings, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.policy = AddressPolicy(settings.allow_cidrs)
        self._resolver = GuardedResolver(self.policy, resolver)
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._client_tls: dict[tuple[str, str], ssl.SSLContext] = {}
        self._checked: dict[str, str | None] = {}
        self._user_agent = f"{settings.user_agent}/{__version__}"

    async def start(self) -> None:
        tls = ssl.create_default_context(
            cafile=str(self.settings.ca_bundle) if self.settings.ca_bundle else None
        )
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            limit_per_host=self.settings.connections_per_host,
            resolver=self._resolver,
            ttl_dns_cache=int(self.settings.dns_cache_seconds) or None,
            use_dns_cache=self.settings.dns_cache_seconds > 0,
            ssl=tls,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=30),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def refusal(self, sub: Subscription) -> str | None:
        """Why this subscription's URL may not be contacted at all (scheme, IP literal), or None."""
        cached = self._checked.get(sub.url, "")
        if cached != "":
            return cached
        parts = urlsplit(sub.url)
        reason: str | None = None
        if parts.scheme == "http" and not self.settings.allow_http:
            reason = "http:// endpoints are refused; set delivery.allow_http to allow them"
        else:
            try:
                self.policy.check_literal(parts.hostname or "")
            except AddressRefused as exc:
                reason = str(exc)
        self._checked[sub.url] = reason
        return reason

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=seconds, connect=min(seconds, 10.0)
            )
        return timeout

    def _tls(self, sub: Subscription) -> ssl.SSLContext | bool:
        cert = sub.client_certificate
        if cert is None:
            return True
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
        headers["webhook-signature"] = sign(sub.signing_keys, event.id, timestamp, body)
        if delivery.traceparent:
            headers["traceparent"] = delivery.traceparent
        return headers

    async def send(self, delivery: Delivery) -> int:
        """One attempt. Returns the status on 2xx; raises a DeliveryError subclass otherwise."""
        sub = delivery.subscription
        refusal = self.refusal(sub)
        if refusal is not None:
            raise PermanentDelivery(refusal)
        session = self._session
        assert session is not None, "HttpSender.start() was not called"
        body = delivery.event.payload(sub.payload)
        try:
            async with session.post(
                sub.url,
                data=body,
                headers=self.headers(delivery, body),
                allow_redirects=False,
                timeout=self._timeout(sub.timeout),
                ssl=self._tls(sub),
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                await _drain(response)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, AddressRefused):
                raise PermanentDelivery(str(exc.os_error)) from None
            raise RetryableDelivery(f"DNS error: {exc.os_error}") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RetryableDelivery(f"TLS certificate error: {exc.certificate_error}") from None
        except aiohttp.ClientSSLError as exc:
            raise RetryableDelivery(f"TLS error: {exc.os_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise RetryableDelivery(f"connection error: {exc.os_error.strerror or exc.os_error}") from None
        except TimeoutError:
            raise RetryableDelivery(f"timeout after {sub.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise RetryableDelivery(f"{type(exc).__name__}: {exc}") from None
        error: DeliveryError | None = classify(status, retry_after, sub.retry.retryable_statuses)
        if error is not None:
            raise error
        return status


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read a small body so the connection can be reused; a large one is abandoned (connection closed)."""
    length = response.content_length
    if length is not None and length <= MAX_RESPONSE_READ:
        await response.read()
        return
    read = 0
    while read <= MAX_RESPONSE_READ:
        chunk = await response.content.readany()
        if not chunk:
            return
        read += len(chunk)
    response.close()
