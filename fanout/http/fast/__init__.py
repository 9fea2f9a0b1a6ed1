"""The fast transport: fanout's own small HTTP/1.1 client (httptools + asyncio), POST only.

Why not aiohttp's ClientSession here: a delivery is one POST of a pre-built body, and aiohttp spends
several times the CPU per request on machinery a webhook POST does not need (``make bench`` runs both).
The contract is ``fanout.http.transport``'s; the parts are ``connection`` (one connection: framing and
response limits), ``pool`` (slots, idle connections) and ``fanout.http.connect`` / ``fanout.http.proxy``
(addresses, happy eyeballs, the proxy).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp.abc import AbstractResolver

from fanout.http.connect import Addresses, dial
from fanout.http.fast.connection import Connection
from fanout.http.fast.pool import HostPool, Pool
from fanout.http.fields import encode_fields
from fanout.http.options import TransportOptions
from fanout.http.proxy import Proxy, authority, open_tunnel
from fanout.http.ssrf import GuardedResolver
from fanout.http.transport import (
    ConnectError,
    ConnectTimeout,
    Origin,
    Request,
    Response,
    ServerDisconnected,
    Timeouts,
    TLSError,
    WriteError,
)

__all__ = ["FastTransport"]

DIRECT = b"POST "


class FastTransport:
    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        self._pool = Pool(options.limits)
        guarded: AbstractResolver = GuardedResolver(options.policy, options.resolver)
        self._targets = Addresses(guarded, options.policy, options.dns_ttl)
        self._proxy_addresses = Addresses(options.resolver, None, options.dns_ttl)
        self._routes: dict[Origin, Proxy | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pool(self) -> Pool:
        return self._pool

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._pool.close()

    async def send(self, request: Request, timeouts: Timeouts) -> Response:
        head = encode_fields(request.headers)
        target = request.target.raw
        pool = self._pool
        host = pool.host(request.origin)
        loop = self._loop
        if loop is None:  # get_running_loop() makes a getpid() system call in Python 3.11: once only
            loop = self._loop = asyncio.get_running_loop()
        connection = await pool.acquire(host, loop.time() + timeouts.pool)
        reused = connection is not None
        deadline = loop.time() + timeouts.total
        if connection is None:
            connection = await self._open(host, timeouts, deadline)
        try:
            return await self._exchange(loop, host, connection, request, target, head, timeouts, deadline)
        except (ServerDisconnected, WriteError) as exc:
            if not reused or getattr(exc, "received", False):
                raise
        # The server had closed the reused keep-alive connection, and no byte of a response came back:
        # once more, on a new connection (receivers de-duplicate on webhook-id).
        await pool.acquire(host, loop.time() + timeouts.pool, fresh=True)
        connection = await self._open(host, timeouts, deadline)
        return await self._exchange(loop, host, connection, request, target, head, timeouts, deadline)

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        host: HostPool,
        connection: Connection,
        request: Request,
        target: bytes,
        head: bytes,
        timeouts: Timeouts,
        deadline: float,
    ) -> Response:
        body = request.body
        fixed = request.fixed.raw if request.fixed is not None else b""
        data = b"".join(
            (
                connection.line_start, target, b" HTTP/1.1\r\nhost: ", request.origin.host_header, b"\r\n",
                connection.proxy_line, fixed, head, b"content-length: %d\r\n\r\n" % len(body), body,
            )
        )  # fmt: skip
        try:
            response = await connection.send(data, min(deadline, loop.time() + timeouts.read))
        except BaseException:
            connection.abort()  # a failure or a cancellation mid-request: the connection is unusable
            self._pool.release(host, connection, 0.0)
            raise
        self._pool.release(host, connection, loop.time())
        return response

    async def _open(self, host: HostPool, timeouts: Timeouts, deadline: float) -> Connection:
        """A new connection in the slot ``acquire`` reserved (given back if this fails)."""
        origin = host.origin
        try:
            async with asyncio.timeout_at(deadline):
                sock, line_start, proxy_line = await self._dial(origin, timeouts.connect)
                connection = await self._handshake(sock, origin, timeouts.connect)
        except TimeoutError:
            self._pool.discard(host)
            raise ConnectTimeout(f"no connection within the attempt's {timeouts.total:g}s") from None
        except BaseException:
            self._pool.discard(host)
            raise
        connection.host = host
        connection.line_start = line_start
        connection.proxy_line = proxy_line
        return connection

    def _route(self, origin: Origin) -> Proxy | None:
        if origin not in self._routes:
            self._routes[origin] = self._options.proxies.for_target(origin.scheme, origin.host)
        return self._routes[origin]

    async def _dial(self, origin: Origin, connect: float) -> tuple[socket.socket, bytes, bytes]:
        """A socket that reaches the origin (directly, or through the proxy), the start of the request
        line, and the proxy's authorization line for forwarded requests."""
        proxy = self._route(origin)
        if proxy is None:
            return (
                await dial(await self._targets.lookup(origin.host, origin.port), origin.port, connect),
                DIRECT,
                b"",
            )
        name = origin.host
        if not self._options.proxy_enforces_egress:
            name = (await self._targets.lookup(origin.host, origin.port))[0][1]
        sock = await dial(await self._proxy_addresses.lookup(proxy.host, proxy.port), proxy.port, connect)
        try:
            if origin.tls is not None:
                try:
                    async with asyncio.timeout(connect):
                        await open_tunnel(
                            sock, authority(name, origin.port), proxy, self._options.response.header_block
                        )
                except TimeoutError:
                    raise ConnectTimeout(f"the proxy did not answer CONNECT within {connect:g}s") from None
                except OSError as exc:
                    raise ConnectError(f"proxy connection failed: {exc.strerror or exc}") from None
                return sock, DIRECT, b""
        except BaseException:
            sock.close()
            raise
        line_start = f"POST http://{authority(name, origin.port)}".encode("ascii")
        auth = proxy.authorization
        return sock, line_start, f"proxy-authorization: {auth}\r\n".encode("latin-1") if auth else b""

    async def _handshake(self, sock: socket.socket, origin: Origin, connect: float) -> Connection:
        loop = asyncio.get_running_loop()
        limits = self._options.response
        tls = origin.tls
        try:
            async with asyncio.timeout(connect):
                _, connection = await loop.create_connection(
                    lambda: Connection(limits),
                    sock=sock,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except TimeoutError:
            sock.close()
            raise ConnectTimeout(f"TLS handshake took longer than {connect:g}s") from None
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TLSError(f"TLS certificate error: {exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TLSError(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            sock.close()
            raise ConnectError(f"connection failed: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return connection
