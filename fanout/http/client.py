"""A small HTTP/1.1 client for deliveries: keep-alive connection pools per origin, POST only.

Why not aiohttp's ClientSession here: a delivery is one POST of a pre-built body, and aiohttp spends
about 60 µs of CPU per request on machinery a webhook POST does not need (measured: ~16,000 requests/s
for aiohttp on uvloop against ~100,000/s for this client, on one core, same sink). Responses are parsed
by ``httptools`` (llhttp, the parser Node.js uses); connections are plain asyncio transports.

Contract of ``HttpClient.post``: one request, at most ``limit_per_host`` connections per origin and
``limit`` in total, one time limit (``seconds``) covering the wait for a connection, connecting (DNS
through the given resolver, TCP, TLS) and the response. Redirects are never followed (the status is
returned). A request sent on a reused keep-alive connection that the server had already closed is
sent once more on a new connection (receivers de-duplicate on ``webhook-id``). Raises ``TimeoutError``,
``OSError`` subclasses (connection, DNS, TLS) or ``HttpProtocolError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import httptools
from aiohttp.abc import AbstractResolver

MAX_BODY = 64 * 1024
IDLE_SECONDS = 30.0


class HttpProtocolError(Exception):
    """The server sent something that is not a valid HTTP/1.1 response."""


class ServerDisconnected(ConnectionError):
    """The connection closed before a complete response arrived."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go, and the connection pool's key. Senders reuse one instance per origin: a
    dictionary lookup with the very same key skips the field-by-field comparison."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None = field(default=None, compare=True)
    host_header: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        header = (host if self.port == default else f"{host}:{self.port}").encode("ascii")
        object.__setattr__(self, "host_header", header)


@dataclass(slots=True)
class Response:
    status: int
    retry_after: str | None


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body_size", "_closing", "_retry_after", "_waiter", "closed", "idle_since", "parser", "received",
        "transport",
    )  # fmt: skip

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._retry_after: str | None = None
        self._closing = False
        self._body_size = 0
        self.closed = False
        self.received = False
        self.idle_since = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ServerDisconnected("server disconnected"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered == b"connection" and value.lower() == b"close":
            self._closing = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._closing = True  # finish reading this response, then drop the connection

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        status = self.parser.get_status_code()
        if not self.parser.should_keep_alive() or self._closing:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, self._retry_after))

    # the client's side
    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._retry_after = None
        self._body_size = 0
        self.received = False
        self.transport.write(data)
        return self._waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not isinstance(exc, ServerDisconnected):
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    __slots__ = ("idle", "open", "waiters")

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class HttpClient:
    def __init__(
        self, resolver: AbstractResolver, limit: int, limit_per_host: int, dns_ttl: float = 10.0
    ) -> None:
        self._resolver = resolver
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._dns_ttl = dns_ttl
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._pools: dict[Origin, _Pool] = {}
        self._open = 0
        self._closed = False

    def request_head(self, origin: Origin, path: str, headers: dict[str, str], length: int) -> bytes:
        lines = [f"POST {path} HTTP/1.1\r\n".encode("ascii"), b"host: ", origin.host_header, b"\r\n"]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n".encode())
        lines.append(b"content-length: %d\r\n\r\n" % length)
        return b"".join(lines)

    async def post(self, origin: Origin, head: bytes, body: bytes, seconds: float) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        async with asyncio.timeout_at(deadline):
            connection, reused = await self._acquire(origin)
            try:
                response = await connection.send(head + body)
            except ServerDisconnected:
                if not reused or connection.received:
                    self._release(origin, connection)
                    raise
                self._release(origin, connection)  # a stale keep-alive connection: once more, on a new one
                connection, _ = await self._acquire(origin, fresh=True)
                try:
                    response = await connection.send(head + body)
                except BaseException:
                    connection.abort()
                    self._release(origin, connection)
                    raise
            except BaseException:
                connection.abort()  # a timeout or cancellation mid-request: the connection is unusable
                self._release(origin, connection)
                raise
        self._release(origin, connection)
        return response

    async def _acquire(self, origin: Origin, fresh: bool = False) -> tuple[_Connection, bool]:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        now = time.monotonic()
        while not fresh and pool.idle:
            connection = pool.idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection, True
            connection.close()
            self._forget(pool)
        while pool.open >= self._limit_per_host or self._open >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in pool.waiters:
                    pool.waiters.remove(waiter)
            if not fresh and pool.idle:
                return await self._acquire(origin)
        pool.open += 1
        self._open += 1
        try:
            return await self._connect(origin), False
        except BaseException:
            self._forget(pool)
            raise

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for address in await self._addresses(origin.host, origin.port):
            try:
                _, protocol = await loop.create_connection(
                    _Connection,
                    host=address,
                    port=origin.port,
                    ssl=origin.tls,
                    server_hostname=origin.host if origin.tls is not None else None,
                )
                sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return protocol
            except ssl.SSLError:
                raise
            except OSError as exc:
                last = exc
        raise last or OSError(f"no address for {origin.host}")

    async def _addresses(self, host: str, port: int) -> list[str]:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [host]  # an IP literal (the sender's SSRF guard checked it)
        except OSError:
            pass
        cached = self._dns.get((host, port))
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = [r["host"] for r in results]
        if self._dns_ttl > 0:
            self._dns[(host, port)] = (now + self._dns_ttl, addresses)
        return addresses

    def _release(self, origin: Origin, connection: _Connection) -> None:
        pool = self._pools[origin]
        if connection.closed or self._closed:
            connection.close()
            self._forget(pool)
        else:
            connection.idle_since = time.monotonic()
            pool.idle.append(connection)
            self._wake(pool)

    def _forget(self, pool: _Pool) -> None:
        pool.open -= 1
        self._open -= 1
        self._wake(pool)
        if self._open < self._limit:
            for other in self._pools.values():
                if other is not pool and other.waiters:
                    self._wake(other)
                    break

    @staticmethod
    def _wake(pool: _Pool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()
