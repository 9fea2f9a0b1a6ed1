"""The aiohttp transport: the same contract as the fast one (``fanout.http.transport``) on aiohttp's
``ClientSession``, the reference implementation (``delivery.transport: aiohttp``).

Configured explicitly: a ``TCPConnector`` with ``limit`` / ``limit_per_host``, happy eyeballs, the SSRF-
guarded resolver and idle connections closed after ``keepalive_expiry`` (aiohttp sweeps them every half
of it); a ``ClientTimeout`` per request (``sock_connect``, ``sock_read``, ``total``); no redirects, no
cookies, no decompression, no automatic headers; bounded reads. Connection slots (``Slots``) are counted
here, in front of aiohttp, so that a wait for one is a ``PoolTimeout`` distinct from a connect timeout;
aiohttp's own limits are the same numbers and never make a request queue. Differences from the fast
transport: aiohttp's parser also limits each header line (8 KiB) and the number of header lines (128),
and ``max_keepalive`` is not enforced (idle connections are bounded by their expiry).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from fanout.http.aiohttp_errors import RequestTrace, translate
from fanout.http.connect import HAPPY_EYEBALLS_DELAY, Addresses, ip_literal
from fanout.http.fields import check_fields
from fanout.http.options import TransportOptions
from fanout.http.proxy import Proxy, authority
from fanout.http.ssrf import GuardedResolver
from fanout.http.transport import (
    EgressRefused,
    Origin,
    PoolTimeout,
    ProtocolError,
    Request,
    Response,
    ResponseTooLarge,
    Timeouts,
)

MAX_LINE = 8190
MAX_HEADERS = 128
READ_CHUNK = 64 * 1024


class Slots:
    """Requests in flight, per origin and in total, with first-come waiters; ``take`` ends at its
    deadline with ``PoolTimeout``."""

    def __init__(self, total: int, per_host: int) -> None:
        self._total = total
        self._per_host = per_host
        self._busy = 0
        self._by_host: dict[Origin, int] = {}
        self._waiters: deque[tuple[Origin, asyncio.Future[None]]] = deque()

    def _free(self, origin: Origin) -> bool:
        return self._busy < self._total and self._by_host.get(origin, 0) < self._per_host

    async def take(self, origin: Origin, deadline: float) -> None:
        while not self._free(origin):
            waiter = asyncio.get_running_loop().create_future()
            entry = (origin, waiter)
            self._waiters.append(entry)
            woken = False
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
                woken = True
            except TimeoutError:
                raise PoolTimeout("no connection slot became free in time") from None
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif not woken and waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, but leaving: pass the turn on
        self._busy += 1
        self._by_host[origin] = self._by_host.get(origin, 0) + 1

    def give_back(self, origin: Origin) -> None:
        self._busy -= 1
        left = self._by_host[origin] - 1
        if left:
            self._by_host[origin] = left
        else:
            del self._by_host[origin]
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        for entry in self._waiters:
            if self._free(entry[0]):
                self._waiters.remove(entry)
                entry[1].set_result(None)
                return


class _Resolver(AbstractResolver):
    """The SSRF guard for targets; the proxies' own names resolve unguarded."""

    def __init__(self, guarded: AbstractResolver, plain: AbstractResolver, proxies: set[str]) -> None:
        self._guarded = guarded
        self._plain = plain
        self._proxies = proxies

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolver = self._plain if host in self._proxies else self._guarded
        return await resolver.resolve(host, port, family)

    async def close(self) -> None:
        await self._guarded.close()


@dataclass(frozen=True)
class _Route:
    base: str  # scheme://host:port, the target's own name
    proxy: Proxy | None
    proxy_headers: dict[str, str] | None = field(default=None)
    refusal: str | None = None  # an IP literal the guard refuses (aiohttp does not ask the resolver for one)


async def _on_created(session: object, trace: object, params: object) -> None:
    trace.trace_request_ctx.connected = True  # type: ignore[attr-defined]


async def _on_reused(session: object, trace: object, params: object) -> None:
    ctx = trace.trace_request_ctx  # type: ignore[attr-defined]
    ctx.connected = ctx.reused = True


class AiohttpTransport:
    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        limits = options.limits
        self._slots = Slots(limits.max_connections, limits.connections_per_host)
        guarded = GuardedResolver(options.policy, options.resolver)
        self._guarded = guarded
        self._targets = Addresses(guarded, options.policy, options.dns_ttl)
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[Origin, _Route] = {}
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        options = self._options
        limits = options.limits
        proxies = {p.host for p in options.proxies.proxies()}
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(_on_created)
        trace.on_connection_reuseconn.append(_on_reused)
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections,
            limit_per_host=limits.connections_per_host,
            keepalive_timeout=limits.keepalive_expiry / 2,
            resolver=_Resolver(self._guarded, options.resolver, proxies),
            use_dns_cache=options.dns_ttl > 0,
            ttl_dns_cache=max(1, round(options.dns_ttl)) if options.dns_ttl > 0 else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            interleave=1,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            max_line_size=min(MAX_LINE, options.response.header_block),
            max_field_size=min(MAX_LINE, options.response.header_block),
            max_headers=MAX_HEADERS,
            read_bufsize=READ_CHUNK,
            trust_env=False,
            trace_configs=[trace],
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _route(self, origin: Origin) -> _Route:
        route = self._routes.get(origin)
        if route is None:
            proxy = self._options.proxies.for_target(origin.scheme, origin.host)
            headers = {"Proxy-Authorization": proxy.authorization} if proxy and proxy.authorization else None
            base = f"{origin.scheme}://{authority(origin.host, origin.port)}"
            ip = ip_literal(origin.host)
            refusal = None
            if ip is not None and proxy is None and not self._options.policy.permits(ip):
                refusal = f"address {ip} is not allowed (SSRF guard)"
            route = self._routes[origin] = _Route(base, proxy, headers, refusal)
        return route

    def _timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            timeout = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=timeouts.total,
                sock_connect=timeouts.connect,
                sock_read=timeouts.read if timeouts.read < timeouts.total else None,  # else total bounds it
            )
        return timeout

    async def send(self, request: Request, timeouts: Timeouts) -> Response:
        check_fields(request.headers)
        target = request.target.text
        origin = request.origin
        loop = asyncio.get_running_loop()
        await self._slots.take(origin, loop.time() + timeouts.pool)
        try:
            for again in (True, False):
                trace = RequestTrace()
                try:
                    return await self._post(request, origin, target, timeouts, trace)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    if not (again and trace.reused and not isinstance(exc, aiohttp.ClientConnectorError)):
                        raise translate(exc, trace) from None
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise translate(exc, trace) from None
            raise AssertionError("unreachable")
        finally:
            self._slots.give_back(origin)

    async def _post(
        self, request: Request, origin: Origin, target: str, timeouts: Timeouts, trace: RequestTrace
    ) -> Response:
        assert self._session is not None, "AiohttpTransport.start() was not called"
        route = self._route(origin)
        url = route.base
        if route.proxy is not None and not self._options.proxy_enforces_egress:
            address = (await self._targets.lookup(origin.host, origin.port))[0][1]
            url = f"{origin.scheme}://{authority(address, origin.port)}"
        elif route.refusal is not None:
            raise EgressRefused(route.refusal)
        headers = [("Host", origin.host_header.decode("ascii"))]
        if route.proxy_headers is not None and origin.tls is None:
            headers += route.proxy_headers.items()  # forwarded: aiohttp sends proxy_headers on CONNECT only
        if request.fixed is not None:
            headers += request.fixed.pairs
        headers += request.headers
        tls = origin.tls
        async with self._session.post(
            URL(url + target, encoded=True),
            data=request.body,
            headers=headers,
            allow_redirects=False,
            timeout=self._timeout(timeouts),
            ssl=tls if tls is not None else True,
            server_hostname=origin.host if tls is not None else None,
            proxy=route.proxy.url if route.proxy is not None else None,
            proxy_headers=route.proxy_headers,
            trace_request_ctx=trace,
        ) as response:
            if response.status == 101:
                raise ProtocolError("101 Switching Protocols: fanout never asks to switch")
            block = sum(len(k) + len(v) + 4 for k, v in response.raw_headers)
            if block > self._options.response.header_block:
                response.close()
                limit = self._options.response.header_block
                raise ResponseTooLarge(f"response header block over {limit} bytes; connection closed")
            body, size = await self._read(response)
            return Response(response.status, list(response.raw_headers), body, size)

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, int]:
        limits = self._options.response
        kept = bytearray()
        size = 0
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > limits.body:
                response.close()
                raise ResponseTooLarge(f"response body over {limits.body} bytes; connection closed")
            if len(kept) < limits.body_prefix:
                kept += chunk[: limits.body_prefix - len(kept)]
        return bytes(kept), size
