"""Outbound authentication: the headers that authenticate a delivery to its endpoint (``Subscription.auth``).

- ``header`` and ``basic`` are fixed headers.
- ``oauth2`` (client credentials, RFC 6749 §4.4): a token is fetched from ``token_url`` and cached per
  subscription and credentials until shortly before it expires. Concurrent deliveries share one fetch.
  When the endpoint answers 401, ``HttpSender`` calls ``invalidate`` and tries once more with a fresh
  token before the attempt counts as failed.

A token-endpoint failure raises ``RetryableDelivery`` (the delivery is retried like any failed attempt;
``Retry-After`` is honoured); a refused token URL (scheme, SSRF guard) raises ``PermanentDelivery``.
Error texts name the status or the error class, never a secret or a response body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from fanout.http.classify import retry_after_seconds
from fanout.http.ssrf import AddressPolicy, AddressRefused
from fanout.model.endpoint_auth import BasicAuth, HeaderAuth, OAuth2ClientCredentials
from fanout.model.errors import PermanentDelivery, RetryableDelivery
from fanout.model.subscription import Subscription

DEFAULT_LIFETIME = 300.0
MAX_TOKEN_RESPONSE = 64 * 1024

TokenKey = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires: float  # monotonic


def _form(value: str) -> str:
    return quote(value, safe="")


def _token_key(sub_id: str, auth: OAuth2ClientCredentials) -> TokenKey:
    digest = hashlib.sha256(auth.client_secret.encode()).hexdigest()
    return (sub_id, auth.token_url, auth.client_id, digest, auth.scope or "", auth.audience or "")


class OutboundAuth:
    """Builds auth headers; owns the OAuth token cache. ``session`` returns the sender's session."""

    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], policy: AddressPolicy, allow_http: bool
    ) -> None:
        self._session = session
        self._policy = policy
        self._allow_http = allow_http
        self._tokens: dict[TokenKey, Token] = {}
        self._fetching: dict[TokenKey, asyncio.Future[Token]] = {}
        self.fetches = 0

    async def headers(self, sub: Subscription) -> dict[str, str]:
        auth = sub.auth
        if auth is None:
            return {}
        if isinstance(auth, HeaderAuth):
            return {auth.name: auth.value}
        if isinstance(auth, BasicAuth):
            pair = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        token = await self._token(sub.id, auth)
        return {"Authorization": f"Bearer {token.value}"}

    def invalidate(self, sub: Subscription, used: dict[str, str]) -> bool:
        """Forget the cached token if it is the one in ``used`` (the endpoint refused it). True if the
        subscription uses OAuth, so a retry with a fresh token makes sense."""
        auth = sub.auth
        if not isinstance(auth, OAuth2ClientCredentials):
            return False
        key = _token_key(sub.id, auth)
        cached = self._tokens.get(key)
        if cached is not None and used.get("Authorization") == f"Bearer {cached.value}":
            del self._tokens[key]
        return True

    async def _token(self, sub_id: str, auth: OAuth2ClientCredentials) -> Token:
        key = _token_key(sub_id, auth)
        cached = self._tokens.get(key)
        if cached is not None and cached.expires > time.monotonic():
            return cached
        pending = self._fetching.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(auth))
            self._fetching[key] = pending
            pending.add_done_callback(lambda _f: self._fetching.pop(key, None))
        token = await asyncio.shield(pending)
        self._tokens[key] = token
        return token

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "http" and not self._allow_http:
            raise PermanentDelivery("token endpoint: http:// URLs are refused")
        try:
            self._policy.check_literal(parts.hostname or "")
        except AddressRefused as exc:
            raise PermanentDelivery(f"token endpoint: {exc}") from None

    async def _fetch(self, auth: OAuth2ClientCredentials) -> Token:
        self._check_url(auth.token_url)
        self.fetches += 1
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if auth.scope:
            form["scope"] = auth.scope
        if auth.audience:
            form["audience"] = auth.audience
        if auth.client_auth == "basic":
            pair = f"{_form(auth.client_id)}:{_form(auth.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form.update(client_id=auth.client_id, client_secret=auth.client_secret)
        started = time.monotonic()
        try:
            async with self._session().post(
                auth.token_url,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=15, connect=10),
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                body = await response.content.read(MAX_TOKEN_RESPONSE)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, AddressRefused):
                raise PermanentDelivery(f"token endpoint: {exc.os_error}") from None
            raise RetryableDelivery("token endpoint: DNS error") from None
        except TimeoutError:
            raise RetryableDelivery("token endpoint: timeout") from None
        except aiohttp.ClientError as exc:
            raise RetryableDelivery(f"token endpoint: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise RetryableDelivery(f"token endpoint answered HTTP {status}", None, retry_after)
        try:
            payload = orjson.loads(body)
            value = payload["access_token"]
            lifetime = float(payload.get("expires_in") or DEFAULT_LIFETIME)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise RetryableDelivery("token endpoint answered without a usable access_token") from None
        if not isinstance(value, str) or not value:
            raise RetryableDelivery("token endpoint answered without a usable access_token")
        margin = min(30.0, lifetime / 10)
        return Token(value, started + max(0.0, lifetime - margin))
