"""A real HTTP receiver for tests: an aiohttp server on loopback that records what it gets."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_cert: str | None = None  # the TLS client certificate's subject CN, when one was presented


POLL_SECONDS = 0.2
Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def answer_204(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=204)


def failing_first_attempt(
    first: Callable[[str], web.StreamResponse] = lambda event_id: web.Response(status=500),
) -> Responder:
    """Answers each event's first request (by ``webhook-id``) with ``first(event_id)``, later ones 204."""
    seen: set[str] = set()

    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        event_id = request.headers["webhook-id"]
        if event_id in seen:
            return web.Response(status=204)
        seen.add(event_id)
        return first(event_id)

    return respond


class Receiver:
    """Records requests; ``respond(request, n)`` (n counts from 0) decides each answer."""

    def __init__(
        self,
        respond: Responder = answer_204,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.respond = respond
        self.host = host
        self.ssl_context = ssl_context
        self.requests: list[Received] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = port

    @property
    def url(self) -> str:
        if self.ssl_context is not None:
            return f"https://localhost:{self.port}"
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        n = len(self.requests)
        self.requests.append(
            Received(request.path_qs, dict(request.headers), body, time.time(), _client_cn(request))
        )
        self._changed.set()
        try:
            return await self.respond(request, n)
        finally:
            self._changed.set()

    def connections(self) -> int:
        """Client connections open now (one closes once the requests it carried have been handled)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate(self.requests)`` holds; fail with what arrived after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.requests):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"receiver condition not met after {timeout}s; got {len(self.requests)}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, POLL_SECONDS))
            except TimeoutError:
                continue

    async def wait_count(self, n: int, timeout: float = 30.0) -> None:
        await self.wait_for(lambda reqs: len(reqs) >= n, timeout)


def _client_cn(request: web.Request) -> str | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
