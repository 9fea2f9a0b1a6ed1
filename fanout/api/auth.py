"""Who is calling, and may they: static API keys and OAuth 2.0 bearer JWTs, checked per route scope.

A credential comes as ``Authorization: Bearer <credential>`` or ``X-API-Key: <key>``.

- **API keys** (``api.keys``) are stored as SHA-256 digests; a key is random and long, so a plain
  digest is enough, and the lookup is by digest (no per-key comparison to time). A key that matched is
  remembered in memory by its text (at most one entry per configured key), so a caller's next requests
  skip the digest.
- **JWTs** (``api.jwt``) must be signed by a key in the issuer's JWKS (fetched from ``jwks_url`` by
  ``fanout.http.jwks``, cached, and fetched again, at most every ``MIN_REFETCH`` seconds, when a token names
  an unknown key) with an allowed algorithm, and carry the configured ``iss`` and ``aud`` and an unexpired
  ``exp``. Scopes come from the ``scope`` claim (space-separated) or a list claim. A token that verified is
  remembered (``VerifiedTokens``), so a caller's next requests skip the signature check (about 100 us of
  CPU, more than the rest of a publish) until the token expires or its key leaves the JWKS.

A missing or bad credential is a 401 with ``WWW-Authenticate``; a credential without the route's
scope (the operation's ``x-scope`` in the OpenAPI document) is a 403. The reason goes into the
problem's detail; the credential never does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from fanout.api.problems import Problem
from fanout.config import ApiSettings, JwtSettings
from fanout.http.jwks import JwksUnavailable, fetch_jwks

log = logging.getLogger("fanout.api.auth")

MIN_REFETCH = 10.0
JWKS_TIMEOUT = 5.0
VERIFIED_TOKENS = 4096


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str
    scopes: frozenset[str]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _unauthorized(detail: str, error: str | None = "invalid_token") -> Problem:
    challenge = 'Bearer realm="fanout"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


class Jwks:
    """The issuer's signing keys, by key id; fetched lazily, refreshed when stale or on a new kid."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        data = await fetch_jwks(self.settings.jwks_url, JWKS_TIMEOUT)
        keys = jwt.PyJWKSet.from_dict(data).keys
        self._keys = {k.key_id: k for k in keys}
        if len(keys) == 1:
            self._keys.setdefault(None, keys[0])
        self._fetched = time.monotonic()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        key = self._keys.get(kid)
        age = time.monotonic() - self._fetched
        if key is not None and age < self.settings.jwks_cache_seconds:
            return key
        async with self._lock:
            age = time.monotonic() - self._fetched
            if (key is None and age >= MIN_REFETCH) or age >= self.settings.jwks_cache_seconds:
                try:
                    await self._fetch()
                except (JwksUnavailable, ValueError, jwt.PyJWTError) as exc:
                    log.warning("could not fetch the JWKS from %s: %s", self.settings.jwks_url, exc)
                    if not self._keys:
                        raise Problem(503, "the token issuer's keys (JWKS) cannot be fetched") from None
            key = self._keys.get(kid)
        if key is None:
            raise _unauthorized("the token is signed by an unknown key")
        return key


class VerifiedTokens:
    """JWTs whose signature and claims verified, with what they proved: at most ``size`` (the oldest
    go first; only verified tokens get in, so bad tokens cannot crowd out good ones). An entry is good
    until the token's ``exp`` (``clock`` is Unix time), and only while the JWKS holds the very key it
    was verified with: the caller compares that key with the JWKS's current one, so a token whose key
    was removed or replaced is refused or verified again as soon as the JWKS is fetched again."""

    def __init__(self, size: int = VERIFIED_TOKENS, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Principal, str | None, jwt.PyJWK, float]] = OrderedDict()

    def get(self, token: str) -> tuple[Principal, str | None, jwt.PyJWK] | None:
        """(principal, key id, key) of a remembered, unexpired token."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._clock() >= entry[3]:
            del self._entries[token]
            return None
        return entry[0], entry[1], entry[2]

    def put(self, token: str, principal: Principal, kid: str | None, key: jwt.PyJWK, expires: float) -> None:
        self._entries.pop(token, None)
        while len(self._entries) >= self.size:
            self._entries.popitem(last=False)
        self._entries[token] = (principal, kid, key, expires)

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    def __init__(self, settings: ApiSettings) -> None:
        self._keys = {k.sha256: Principal(k.name, "api-key", frozenset(k.scopes)) for k in settings.keys}
        self._known: dict[str, Principal] = {}
        self._jwt = settings.jwt
        self._jwks = Jwks(settings.jwt) if settings.jwt else None
        self.verified = VerifiedTokens()

    def credential(self, request: web.Request) -> str:
        """The request's credential (``X-API-Key``, or ``Authorization: Bearer``); 401 without one."""
        credential = request.headers.get("X-API-Key")
        if credential is None:
            scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise _unauthorized("a credential is required: Authorization: Bearer <API key or JWT>", None)
            credential = credential.strip()
        return credential

    def api_key(self, credential: str) -> Principal | None:
        """The principal of a configured API key; None for anything else (a JWT, say). A key that
        matched is remembered, so its next requests skip the digest: only strings whose digest is a
        configured key's get in, so there is at most one entry per configured key (static keys do not
        expire; a new key set is a restart)."""
        principal = self._known.get(credential)
        if principal is None:
            principal = self._keys.get(key_digest(credential))
            if principal is not None:
                self._known[credential] = principal
        return principal

    async def check(self, credential: str) -> Principal:
        """Who ``credential`` (an API key or a JWT) is; a ``Problem`` (401, or 503 without the JWKS)
        if it is neither. The console checks the credential of a session with this on every request."""
        return self.api_key(credential) or await self.token(credential)

    async def token(self, credential: str) -> Principal:
        """Who the JWT ``credential`` is; a ``Problem`` (401, or 503 without the JWKS) if it is none. For a
        credential ``api_key`` did not know (``check`` is both)."""
        if self._jwks is not None and credential.count(".") == 2:
            return await self._token(credential)
        raise _unauthorized("the credential is not a valid API key or token")

    async def _token(self, token: str) -> Principal:
        assert self._jwt is not None and self._jwks is not None
        settings = self._jwt
        known = self.verified.get(token)
        if known is not None:
            principal, kid, verified_with = known
            if await self._jwks.key(kid) is verified_with:  # fetches a stale JWKS; 401 for a key gone
                return principal
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise _unauthorized(f"the token's algorithm {str(algorithm)[:20]!r} is not accepted")
        key = await self._jwks.key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"the token is invalid ({type(exc).__name__})") from None
        principal = Principal(
            str(claims.get("sub", "(no subject)")), "jwt", _scopes(claims.get(settings.scope_claim))
        )
        self.verified.put(token, principal, header.get("kid"), key, float(claims["exp"]))
        return principal


def _scopes(claim: Any) -> frozenset[str]:
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list):
        return frozenset(s for s in claim if isinstance(s, str))
    return frozenset()


AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
