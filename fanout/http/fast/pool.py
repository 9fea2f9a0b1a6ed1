"""Connection slots and idle connections of the fast transport (``Limits``).

``acquire(origin, deadline)`` returns an idle connection of the origin (most recently used first), or
reserves a slot for a new one (the caller connects, then ``release``s or ``discard``s). A slot is one
open connection, busy or idle: at most ``connections_per_host`` per origin and ``max_connections`` in
all. Idle connections never keep a new one from opening: when every slot is taken and some are idle,
the oldest idle connection (of any origin) is closed to make room. Waiting for a slot ends at the pool
deadline with ``PoolTimeout``.

Idle connections: at most ``max_keepalive`` (the oldest is closed first), each closed by a timer
``keepalive_expiry`` seconds after it went idle, and dropped as soon as the server closes it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from fanout.http.fast.connection import Connection
from fanout.http.transport import Limits, Origin, PoolTimeout


class HostPool:
    """The connections of one origin."""

    __slots__ = ("idle", "open", "origin", "owner", "waiters")

    def __init__(self, origin: Origin, owner: Pool) -> None:
        self.origin = origin
        self.owner = owner
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def lost(self, connection: Connection) -> None:
        """The server closed ``connection``; if it was idle, its slot is free now."""
        self.owner.lost(self, connection)


class Pool:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._max_keepalive = min(limits.max_keepalive, limits.max_connections)
        self._hosts: dict[Origin, HostPool] = {}
        self._idle: dict[Connection, HostPool] = {}  # every idle connection, oldest first
        self._waiting: dict[HostPool, None] = {}  # host pools with waiters, in order of arrival
        self._open = 0
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def open(self) -> int:
        return self._open

    def host(self, origin: Origin) -> HostPool:
        pool = self._hosts.get(origin)
        if pool is None:
            pool = self._hosts[origin] = HostPool(origin, self)
        return pool

    async def acquire(self, host: HostPool, deadline: float, fresh: bool = False) -> Connection | None:
        """An idle connection of ``host`` (not if ``fresh``), or None with a slot reserved for a new one."""
        limits = self.limits
        while True:
            idle = host.idle
            while idle and not fresh:
                connection = idle.pop()
                del self._idle[connection]
                if not connection.closed:
                    return connection
                self._forget(host)
            if fresh and idle and host.open >= limits.connections_per_host:
                self._close_idle(idle[0], host)
            if host.open < limits.connections_per_host and (
                self._open < limits.max_connections or self._evict_oldest()
            ):
                host.open += 1
                self._open += 1
                return None
            await self._wait(host, deadline)

    async def _wait(self, host: HostPool, deadline: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        host.waiters.append(waiter)
        self._waiting[host] = None
        woken = False
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
            woken = True
        except TimeoutError:
            raise PoolTimeout("no connection slot became free in time") from None
        finally:
            if not waiter.done():
                waiter.cancel()
            elif not woken and not waiter.cancelled():
                self._wake(host)  # woken, but leaving: pass the turn on
            if waiter in host.waiters:
                host.waiters.remove(waiter)
            if not host.waiters:
                self._waiting.pop(host, None)

    def release(self, host: HostPool, connection: Connection, now: float) -> None:
        """Return a connection after a request: kept idle if it can be, else closed and its slot freed."""
        if connection.closed or self.closed:
            connection.close()
            self._forget(host)
            return
        if len(self._idle) >= self._max_keepalive and not self._evict_oldest():
            connection.close()
            self._forget(host)
            return
        connection.idle_since = now
        host.idle.append(connection)
        self._idle[connection] = host
        if self._timer is None:
            self._arm(now)
        self._wake(host)

    def discard(self, host: HostPool) -> None:
        """Give back a slot reserved by ``acquire`` whose connection failed to open."""
        self._forget(host)

    def lost(self, host: HostPool, connection: Connection) -> None:
        if self._idle.pop(connection, None) is not None:
            host.idle.remove(connection)
            self._forget(host)

    def _forget(self, host: HostPool) -> None:
        host.open -= 1
        self._open -= 1
        self._wake(host)

    def _evict_oldest(self) -> bool:
        """Close the connection idle the longest, of any origin; False if none is idle."""
        if not self._idle:
            return False
        connection, host = next(iter(self._idle.items()))
        self._close_idle(connection, host)
        return True

    def _close_idle(self, connection: Connection, host: HostPool) -> None:
        """Close an idle connection to make room (no waiter is woken: the caller takes the slot)."""
        del self._idle[connection]
        host.idle.remove(connection)
        connection.close()
        host.open -= 1
        self._open -= 1

    def _wake(self, host: HostPool) -> None:
        """Capacity changed: wake a waiter of ``host`` if it has any, else one that a slot now serves."""
        if self._wake_first(host):
            return
        per_host = self.limits.connections_per_host
        for waiting in self._waiting:
            if waiting.open < per_host and self._wake_first(waiting):
                return

    @staticmethod
    def _wake_first(host: HostPool) -> bool:
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _arm(self, now: float) -> None:
        oldest = next(iter(self._idle))
        when = oldest.idle_since + self.limits.keepalive_expiry
        self._timer = asyncio.get_running_loop().call_at(max(when, now), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        expiry = self.limits.keepalive_expiry
        while self._idle:
            connection, host = next(iter(self._idle.items()))
            if connection.idle_since + expiry > now:
                self._arm(now)
                return
            self._close_idle(connection, host)
            self._wake(host)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for connection, host in list(self._idle.items()):
            self._close_idle(connection, host)
        self._hosts.clear()
