"""The delivery HTTP client against raw servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp.resolver import DefaultResolver

from fanout.http.client import HttpClient, HttpProtocolError, Origin, ServerDisconnected

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.open = 0
        self.peak = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        self.requests += 1
        return head


@asynccontextmanager
async def raw_server(handler: Callable[[RawServer], Handler]) -> AsyncIterator[tuple[RawServer, Origin]]:
    raw = RawServer(lambda r, w: asyncio.sleep(0))
    raw.handler = handler(raw)
    server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield raw, Origin("http", "127.0.0.1", port)
    finally:
        server.close()


def client(limit_per_host: int = 8) -> HttpClient:
    return HttpClient(DefaultResolver(), limit=100, limit_per_host=limit_per_host)


def request(c: HttpClient, origin: Origin) -> tuple[bytes, bytes]:
    body = b'{"hello": "world"}'
    return c.request_head(origin, "/hook?x=1", {"content-type": "application/json"}, len(body)), body


def keep_alive(raw: RawServer, response: bytes = NO_CONTENT, close_after: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(response)
            await writer.drain()
            if close_after:
                return

    return handle


async def test_keep_alive_reuses_one_connection() -> None:
    async with raw_server(lambda raw: keep_alive(raw)) as (raw, origin):
        c = client()
        for _ in range(20):
            assert (await c.post(origin, *request(c, origin), 5)).status == 204
        await c.close()
    assert raw.requests == 20 and raw.connections == 1


async def test_connection_close_and_stale_connections_are_handled() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(lambda raw: keep_alive(raw, closing)) as (raw, origin):
        c = client()
        for _ in range(5):
            assert (await c.post(origin, *request(c, origin), 5)).status == 200
        await c.close()
    assert raw.connections == 5
    # The server closes after every response without saying so: the idle connection is stale when
    # reused, and the request is sent once more on a new connection.
    async with raw_server(lambda raw: keep_alive(raw, close_after=True)) as (raw, origin):
        c = client()
        for _ in range(5):
            assert (await c.post(origin, *request(c, origin), 5)).status == 204
            await asyncio.sleep(0.05)  # let the server's close arrive before the next request
        await c.close()
    assert raw.requests == 5


async def test_chunked_and_large_bodies_and_retry_after() -> None:
    chunked = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with raw_server(lambda raw: keep_alive(raw, chunked)) as (raw, origin):
        c = client()
        response = await c.post(origin, *request(c, origin), 5)
        assert (response.status, response.retry_after) == (503, "7")
        assert (await c.post(origin, *request(c, origin), 5)).status == 503
        await c.close()
    assert raw.connections == 1
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200_000
    async with raw_server(lambda raw: keep_alive(raw, big)) as (raw, origin):
        c = client()
        for _ in range(3):
            assert (await c.post(origin, *request(c, origin), 5)).status == 200
        await c.close()
    assert raw.connections == 3, "a connection that carried a large body is not kept"


async def test_timeout_connection_refused_and_garbage() -> None:
    async def never(raw: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await raw.read_request(reader)
            await asyncio.sleep(30)

        return handle

    silent = await never(RawServer(lambda r, w: asyncio.sleep(0)))
    async with raw_server(lambda raw: silent) as (_, origin):
        c = client()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.post(origin, *request(c, origin), 0.3)
        assert time.monotonic() - started < 2
        await c.close()

    async with raw_server(lambda raw: keep_alive(raw, b"NOT HTTP AT ALL\r\n\r\n")) as (_, origin):
        c = client()
        with pytest.raises(HttpProtocolError):
            await c.post(origin, *request(c, origin), 5)
        await c.close()

    async with raw_server(lambda raw: keep_alive(raw)) as (_, origin):
        pass  # the port is free again
    c = client()
    with pytest.raises(OSError) as refused:
        await c.post(origin, *request(c, origin), 5)
    assert not isinstance(refused.value, ServerDisconnected)
    await c.close()


async def test_connections_per_host_are_limited() -> None:
    def slow(raw: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await raw.read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(NO_CONTENT)
                await writer.drain()

        return handle

    async with raw_server(slow) as (raw, origin):
        c = client(limit_per_host=5)
        results = await asyncio.gather(*(c.post(origin, *request(c, origin), 10) for _ in range(50)))
        await c.close()
    assert all(r.status == 204 for r in results)
    assert raw.peak == 5 and raw.connections == 5
