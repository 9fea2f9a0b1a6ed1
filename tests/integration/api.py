"""Helpers for API tests: settings with API keys, the API running in this event loop on a real port,
a client that speaks to it, and a JWKS server with keys minted in the test."""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from fanout.api.app import build_app
from fanout.api.app import runner as api_runner
from fanout.api.auth import key_digest
from fanout.config import SCOPES, ApiKey, ApiSettings, Settings
from tests.integration.engine import create_engine_topics, engine_settings

FULL_KEY = "fo_full_" + secrets.token_urlsafe(24)
READ_KEY = "fo_read_" + secrets.token_urlsafe(24)


def api_settings(bootstrap: str, unique: str, partitions: int = 3, **api: Any) -> Settings:
    """Engine settings plus an API with an allow-listed topic ``<unique>.events`` (the default), a key
    with every scope (``FULL_KEY``) and a read-only one (``READ_KEY``)."""
    topic = f"{unique}.events"
    fields: dict[str, Any] = {
        "port": 0,
        "topics": [topic],
        "default_topic": topic,
        "keys": [
            ApiKey(name="full", sha256=key_digest(FULL_KEY), scopes=list(SCOPES)),  # type: ignore[arg-type]
            ApiKey(
                name="reader", sha256=key_digest(READ_KEY), scopes=["subscriptions:read", "dead-letters:read"]
            ),
        ],
        **api,
    }
    return engine_settings(bootstrap, unique, partitions, api=ApiSettings(**fields))


def source_topic(settings: Settings) -> str:
    assert settings.api.default_topic is not None
    return settings.api.default_topic


def create_api_topics(settings: Settings, *extra: str) -> None:
    topics = [*settings.api.topics, *(s.topic for s in settings.api.ingest.values()), *extra]
    create_engine_topics(settings, list(dict.fromkeys(topics)))


@dataclass
class Client:
    """An aiohttp session against the running API; ``call`` returns (status, headers, JSON or None)."""

    base: str
    session: aiohttp.ClientSession
    app: web.Application
    key: str | None = FULL_KEY

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = "",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        sent = dict(headers or {})
        credential = self.key if key == "" else key
        if credential is not None:
            sent.setdefault("Authorization", f"Bearer {credential}")
        if json is not None:
            data = orjson_bytes(json)
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, data=data, headers=sent, params=params
        ) as r:
            body = await r.read()
            parsed = None
            if body and (r.content_type.endswith("json")):
                parsed = await r.json(content_type=None)
            return r.status, r.headers, parsed


def orjson_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, tracing: Any = None, history: Path | None = None
) -> AsyncIterator[Client]:
    """The API serving on 127.0.0.1 (a free port) in this event loop, until the block ends. Its history
    index is at ``history``, or in a directory of its own (an API locks its index file, and several
    replicas of one test's settings may run at once)."""
    with tempfile.TemporaryDirectory(prefix="fanout-history-") as own:
        path = history or Path(own) / "history.sqlite"
        settings = settings.model_copy(update={"history": settings.history.model_copy(update={"path": path})})
        async with _serving(settings, tracing) as client:
            yield client


@contextlib.asynccontextmanager
async def _serving(settings: Settings, tracing: Any) -> AsyncIterator[Client]:
    runner = api_runner(build_app(settings, tracing=tracing))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(f"http://127.0.0.1:{port}", session, runner.app)
    finally:
        await runner.cleanup()


class Issuer:
    """An OAuth issuer for tests: RSA keys minted here, a JWKS served on loopback, tokens on demand."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.url = ""
        self.issuer = "https://issuer.test"
        self.audience = "fanout-api"
        self.fetches = 0
        self._runner: web.AppRunner | None = None

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(
        self, scopes: str = " ".join(SCOPES), key: Any = None, kid: str | None = None, **claims: Any
    ) -> str:
        """A signed JWT valid for 5 minutes; ``claims`` override (``exp``, ``aud``, ``iss``, ...)."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": "svc-test", "iat": now, "exp": now + 300}
        payload.update(scope=scopes, **claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    async def __aenter__(self) -> Issuer:
        async def serve(request: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/.well-known/jwks.json"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def record_count(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds (high minus low watermark, over its partitions)."""
    from fanout.kafka.ranges import RangeReader

    with RangeReader(settings) as reader:
        marks = reader.watermarks(topic, reader.partitions(topic))
    return sum(high - low for low, high in marks.values())


async def dispatcher_sees(app: Any, sub_id: str, check: Any, timeout: float = 30.0) -> None:
    """Poll (with a deadline) until the running dispatcher's routing table has ``sub_id`` and
    ``check(subscription)`` holds: its table follows the subscriptions topic a moment behind writes."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        sub = app.table.get(sub_id)
        if sub is not None and check(sub):
            return
        assert time.monotonic() < deadline, f"the dispatcher's table never showed the change to {sub_id}"
        await asyncio.sleep(0.05)
