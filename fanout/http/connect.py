"""Opening TCP connections: addresses through the SSRF guard, then happy eyeballs (RFC 8305).

``Addresses.lookup(host, port)`` resolves a name (cached for ``dns_ttl`` seconds) and keeps only the
addresses the ``AddressPolicy`` permits; an IP literal is checked the same way. ``dial(addresses,
seconds)`` tries them in turn, alternating address families: each address gets ``seconds`` to
complete TCP; the next one starts ``HAPPY_EYEBALLS_DELAY`` seconds after the previous, or at once when
it fails; the first to connect wins and the others are cancelled (or closed, if they connected too).
The proxy's own address is operator configuration: it is looked up without the guard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from aiohttp.abc import AbstractResolver

from fanout.http.ssrf import AddressPolicy, AddressRefused
from fanout.http.transport import ConnectError, ConnectTimeout, EgressRefused

HAPPY_EYEBALLS_DELAY = 0.25
DNS_CACHE_ENTRIES = 10_000

Address = tuple[socket.AddressFamily, str]


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Addresses:
    """Name resolution for connections. ``policy`` None: unguarded (the proxy's address)."""

    def __init__(self, resolver: AbstractResolver, policy: AddressPolicy | None, dns_ttl: float) -> None:
        self._resolver = resolver
        self._policy = policy
        self._ttl = dns_ttl
        self._cache: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._literals: dict[str, list[Address]] = {}  # IP literals the policy permits (it never changes)

    async def lookup(self, host: str, port: int) -> list[Address]:
        """The addresses to try, in the resolver's order; raises ``EgressRefused`` or ``ConnectError``."""
        permitted = self._literals.get(host)
        if permitted is not None:
            return permitted
        ip = ip_literal(host)
        if ip is not None:
            if self._policy is not None and not self._policy.permits(ip):
                raise EgressRefused(f"address {ip} is not allowed (SSRF guard)")
            if len(self._literals) >= DNS_CACHE_ENTRIES:
                self._literals.clear()
            permitted = self._literals[host] = [
                (socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))
            ]
            return permitted
        now = time.monotonic()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        except AddressRefused as exc:
            raise EgressRefused(str(exc)) from None
        except OSError as exc:
            raise ConnectError(f"DNS error for {host}: {getattr(exc, 'strerror', None) or exc}") from None
        found: list[Address] = []
        for result in results:
            if self._policy is not None and not self._policy.permits(result["host"]):
                continue  # a resolver without the guard: check here as well
            address = result["host"]
            found.append((socket.AF_INET6 if ":" in address else socket.AF_INET, address))
        if not found:
            raise EgressRefused(f"{host} has no address the SSRF guard allows")
        if self._ttl > 0:
            if len(self._cache) >= DNS_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[(host, port)] = (now + self._ttl, found)
        return found


def interleave(addresses: list[Address]) -> list[Address]:
    """Alternate address families, starting with the family of the first address (RFC 8305 §4)."""
    if len(addresses) < 2:
        return addresses
    first = addresses[0][0]
    same = [a for a in addresses if a[0] == first]
    other = [a for a in addresses if a[0] != first]
    mixed: list[Address] = []
    for i in range(max(len(same), len(other))):
        mixed += same[i : i + 1] + other[i : i + 1]
    return mixed


async def _connect_one(address: Address, port: int, seconds: float) -> socket.socket:
    family, host = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(seconds):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_if_connected(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def dial(
    addresses: list[Address], port: int, seconds: float, delay: float = HAPPY_EYEBALLS_DELAY
) -> socket.socket:
    """A connected non-blocking socket to one of ``addresses``, each given ``seconds``; raises
    ``ConnectTimeout`` when every address timed out, else ``ConnectError`` with the last failure."""
    order = interleave(addresses)
    # Nothing to race with one address: no tasks (an endpoint that closes after each error reconnects often).
    if len(order) == 1:
        where = f"{order[0][1]} port {port}"
        try:
            return await _connect_one(order[0], port, seconds)
        except TimeoutError:
            raise ConnectTimeout(f"connect to {where} timed out after {seconds:g}s") from None
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConnectError(f"connect to {where} failed: {reason}") from None
    pending: set[asyncio.Task[socket.socket]] = set()
    errors: list[BaseException] = []
    winner: socket.socket | None = None
    started = 0
    try:
        while winner is None and (pending or started < len(order)):
            if started < len(order):  # first, after ``delay``, or at once after a failure
                pending.add(asyncio.ensure_future(_connect_one(order[started], port, seconds)))
                started += 1
            wait = delay if started < len(order) else None
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    errors.append(error)
                elif winner is None:
                    winner = task.result()
                else:
                    task.result().close()
    finally:
        for task in pending:
            task.cancel()
            task.add_done_callback(_close_if_connected)
    if winner is not None:
        return winner
    where = f"{order[0][1]} port {port}" if len(order) == 1 else f"{len(order)} addresses, port {port}"
    if errors and all(isinstance(e, TimeoutError) for e in errors):
        raise ConnectTimeout(f"connect to {where} timed out after {seconds:g}s")
    last = errors[-1] if errors else None
    reason = getattr(last, "strerror", None) or last or "no address"
    raise ConnectError(f"connect to {where} failed: {reason}")
