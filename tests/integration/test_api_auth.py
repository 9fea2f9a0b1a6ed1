"""Authentication and scopes: API keys and JWTs minted here, validated against a local JWKS server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fanout.api.auth import AUTHENTICATOR
from fanout.api.context import API
from fanout.config import JwtSettings
from tests.integration.api import READ_KEY, Issuer, api_settings, create_api_topics, running_api


async def test_tokens_and_keys(bootstrap: str, unique: str) -> None:
    async with Issuer() as issuer:
        jwt_settings = JwtSettings(
            jwks_url=issuer.url, issuer=issuer.issuer, audience=issuer.audience, leeway=0
        )
        settings = api_settings(bootstrap, unique, jwt=jwt_settings)
        create_api_topics(settings)
        async with running_api(settings) as api:

            async def status_of(token: str | None, path: str = "/v1/subscriptions") -> tuple[int, str]:
                status, headers, body = await api.call("GET", path, key=token)
                if status >= 400:
                    assert headers["Content-Type"].startswith("application/problem+json")
                    assert body["status"] == status
                    return status, body["detail"]
                return status, ""

            assert (await status_of(issuer.token()))[0] == 200
            assert (await status_of(issuer.token(scopes="subscriptions:read")))[0] == 200
            assert (await status_of(READ_KEY))[0] == 200

            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cases = {
                "missing": (None, 401, "credential is required"),
                "garbage": ("not-a-token", 401, "not a valid API key"),
                "expired": (issuer.token(exp=int(time.time()) - 60), 401, "expired"),
                "wrong audience": (issuer.token(aud="someone-else"), 401, "audience"),
                "wrong issuer": (issuer.token(iss="https://evil.test"), 401, "issuer"),
                "unknown key id": (issuer.token(key=stranger, kid="who-knows"), 401, "unknown key"),
                "known kid, wrong key": (issuer.token(key=stranger), 401, "signature"),
                "wrong scope": (issuer.token(scopes="events:publish"), 403, "subscriptions:read"),
                "no scope": (issuer.token(scopes=""), 403, "subscriptions:read"),
            }
            for name, (token, expected, words) in cases.items():
                status, detail = await status_of(token)
                assert (status, words in detail) == (expected, True), (name, status, detail)
            assert (await status_of(READ_KEY, "/v1/dead-letters"))[0] == 200
            status, _, problem = await api.call("POST", "/v1/events", {"event": "x"}, key=READ_KEY)
            assert status == 403 and "events:publish" in problem["detail"]
            status, headers, _ = await api.call("GET", "/v1/subscriptions", key=issuer.token(exp=0))
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
            # unauthenticated routes
            for path in ("/healthz", "/readyz", "/openapi.json"):
                assert (await api.call("GET", path, key=None))[0] == 200
            probe = api.app[API].probe
            probe.last_ok = float("-inf")  # as if the broker had not answered for a while
            status, _, ready = await api.call("GET", "/readyz", key=None)
            ready.pop("history")  # reported, never waited for (tests/integration/test_api_history.py)
            assert (status, ready) == (503, {"status": "unavailable", "broker": False, "subscriptions": True})
            assert await probe.check() and (await api.call("GET", "/readyz", key=None))[0] == 200
        assert issuer.fetches <= 3, "the JWKS is cached (fetched again only for an unknown key id)"


async def test_a_verified_token_is_remembered_until_it_expires_or_its_key_leaves_the_jwks(
    bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    async with Issuer() as issuer:
        jwt_settings = JwtSettings(
            jwks_url=issuer.url, issuer=issuer.issuer, audience=issuer.audience, leeway=0
        )
        settings = api_settings(bootstrap, unique, jwt=jwt_settings)
        create_api_topics(settings)
        async with running_api(settings) as api:
            authenticator = api.app[AUTHENTICATOR]
            token = issuer.token(scopes="subscriptions:read")
            for _ in range(3):
                assert (await api.call("GET", "/v1/subscriptions", key=token))[0] == 200
            assert decoded == [token], "verified once, then remembered"

            # expiry: a remembered token is refused once its exp has passed
            short = issuer.token(scopes="subscriptions:read", exp=int(time.time()) + 2)
            assert (await api.call("GET", "/v1/subscriptions", key=short))[0] == 200
            deadline = time.monotonic() + 15
            while (answer := await api.call("GET", "/v1/subscriptions", key=short))[0] == 200:
                assert time.monotonic() < deadline, "an expired token was still accepted"
                await asyncio.sleep(0.2)
            assert answer[0] == 401 and "expired" in answer[2]["detail"]

            # the issuer rotates its key: once the JWKS is fetched again, the old key's tokens are refused
            issuer.key, issuer.kid = issuer.stranger, "test-key-2"
            authenticator._jwks._fetched = float("-inf")  # type: ignore[union-attr]  # as if it were stale
            status, _, problem = await api.call("GET", "/v1/subscriptions", key=token)
            assert status == 401 and "unknown key" in problem["detail"]
            assert (
                await api.call("GET", "/v1/subscriptions", key=issuer.token(scopes="subscriptions:read"))
            )[0] == 200
