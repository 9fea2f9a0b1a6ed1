"""Outbound auth on deliveries (``fanout.http.auth``), against a real local OAuth token server: the token
is fetched once and cached, refreshed once on a 401, token-endpoint failures are retryable, secrets
never appear in errors or logs; HTTP basic and a static header; and the whole path through the
dispatcher with the client secret encrypted in the subscriptions topic."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from fanout.config import DeliverySettings
from fanout.http.sender import HttpSender
from fanout.model.errors import PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.subscription import parse_subscription
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    read_topic,
    running,
)
from tests.receivers import Receiver
from tests.unit.factories import SECRET, make_event

CLIENT_SECRET = "client-secret-value-42"


class TokenServer:
    """Client credentials grant: answers ``tok-<n>`` for the right client, or ``fail_with``."""

    def __init__(self, client_auth: str = "basic") -> None:
        self.client_auth = client_auth
        self.issued: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.fail_with: int | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.forms.append({k: str(v) for k, v in form.items()})
        if self.fail_with is not None:
            return web.json_response({"error": "temporarily_unavailable"}, status=self.fail_with)
        if self.client_auth == "basic":
            expected = "Basic " + base64.b64encode(f"svc:{CLIENT_SECRET}".encode()).decode()
            ok = request.headers.get("Authorization") == expected
        else:
            ok = form.get("client_id") == "svc" and form.get("client_secret") == CLIENT_SECRET
        if form.get("grant_type") != "client_credentials" or not ok:
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued.append(f"tok-{len(self.issued) + 1}")
        return web.json_response(
            {"access_token": self.issued[-1], "token_type": "Bearer", "expires_in": 3600}
        )

    async def __aenter__(self) -> TokenServer:
        app = web.Application()
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/token"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def oauth(token_url: str, client_auth: str = "basic") -> dict[str, Any]:
    return {
        "type": "oauth2",
        "token_url": token_url,
        "client_id": "svc",
        "client_secret": CLIENT_SECRET,
        "scope": "hooks:write",
        "client_auth": client_auth,
    }


class _Ticket:
    fenced = False

    def release(self) -> None:
        return None


def delivery(url: str, auth: dict[str, Any]) -> Delivery:
    sub = parse_subscription({"id": "s", "url": url, "topics": ["t"], "secrets": [SECRET], "auth": auth})
    return Delivery(make_event(), sub, 0, time.time(), _Ticket())


@pytest.fixture
async def sender() -> AsyncIterator[HttpSender]:
    s = HttpSender(DeliverySettings(allow_http=True, allow_cidrs=["127.0.0.0/8"]))
    await s.start()
    yield s
    await s.close()


def bearer_endpoint(accepted: set[str]) -> Any:
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return web.Response(status=204 if token in accepted else 401)

    return answer


async def test_token_cached_and_refreshed_once_on_401(
    sender: HttpSender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accepted = {"tok-1"}
    async with TokenServer() as tokens, Receiver(bearer_endpoint(accepted)) as endpoint:
        d = delivery(endpoint.url, oauth(tokens.url))
        await sender.send(d)
        await sender.send(d)
        assert tokens.issued == ["tok-1"], "one fetch, cached for the next delivery"
        assert tokens.forms[0] == {"grant_type": "client_credentials", "scope": "hooks:write"}

        accepted.clear()
        accepted.add("tok-2")  # the endpoint revoked tok-1
        await sender.send(d)
        assert tokens.issued == ["tok-1", "tok-2"]
        assert [r.headers["Authorization"] for r in endpoint.requests] == [
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
        ]

        accepted.clear()  # 401 for every token: one refresh, then the attempt fails
        with pytest.raises(PermanentDelivery) as failed:
            await sender.send(d)
        assert failed.value.status == 401 and len(tokens.issued) == 3

        tokens.fail_with = 503
        accepted.add("tok-4")
        sender.auth.invalidate(d.subscription, {"Authorization": "Bearer tok-3"})
        with pytest.raises(RetryableDelivery) as token_down:
            await sender.send(d)
        assert "token endpoint answered HTTP 503" in token_down.value.error
        tokens.fail_with = None
        await sender.send(d)  # the next attempt (a retry) gets a token and gets through
        assert endpoint.requests[-1].headers["Authorization"] == "Bearer tok-4"
    logged = caplog.text + str(failed.value) + str(token_down.value)
    assert CLIENT_SECRET not in logged and "tok-" not in caplog.text


async def test_client_secret_post_basic_and_header_auth(sender: HttpSender) -> None:
    async with TokenServer(client_auth="post") as tokens, Receiver() as endpoint:
        await sender.send(delivery(endpoint.url, oauth(tokens.url, client_auth="post")))
        assert tokens.forms[0]["client_secret"] == CLIENT_SECRET
        assert endpoint.requests[0].headers["Authorization"] == "Bearer tok-1"
        await sender.send(delivery(endpoint.url, {"type": "basic", "username": "u", "password": "p:w"}))
        assert endpoint.requests[1].headers["Authorization"] == "Basic " + base64.b64encode(b"u:p:w").decode()
        await sender.send(delivery(endpoint.url, {"type": "header", "name": "X-Api-Key", "value": "k-1"}))
        assert endpoint.requests[2].headers["X-Api-Key"] == "k-1"
    async with TokenServer() as tokens, Receiver() as endpoint:
        wrong = oauth(tokens.url) | {"client_secret": "wrong"}
        with pytest.raises(RetryableDelivery, match="token endpoint answered HTTP 401") as refused:
            await sender.send(delivery(endpoint.url, wrong))
        assert "wrong" not in str(refused.value) and not endpoint.requests


async def test_dispatcher_delivers_with_oauth_from_an_encrypted_subscription(
    bootstrap: str, unique: str
) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with TokenServer() as tokens, Receiver(bearer_endpoint({"tok-1"})) as endpoint:
        sub = parse_subscription(
            {
                "id": "oauth",
                "url": endpoint.url,
                "topics": [topic],
                "secrets": [SECRET],
                "auth": oauth(tokens.url),
            }
        )
        await apply(settings, [sub])
        async with running(settings):
            produce(settings, topic, events(5))
            await endpoint.wait_count(5)
    assert tokens.issued == ["tok-1"]
    assert {r.headers["Authorization"] for r in endpoint.requests} == {"Bearer tok-1"}
    (stored,) = read_topic(settings, settings.topics.subscriptions, 1)
    assert CLIENT_SECRET.encode() not in (stored.value() or b"")
    assert SECRET.encode() not in (stored.value() or b"")
