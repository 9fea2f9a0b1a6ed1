"""The limits a lane applies: a token bucket (rate), a circuit breaker, and per-host connection slots."""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

from fanout.model.subscription import RateLimit


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; ``take`` spends one if there is one."""

    __slots__ = ("_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Spend a token and return 0, or return the seconds until one is available."""
        now = time.monotonic()
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def time_until(self, n: int) -> float:
        """Seconds until the ``n``-th of a run of takes succeeds (0 if there are ``n`` tokens now)."""
        self._refill(time.monotonic())
        return max(0.0, n - self._tokens) / self.rate

    def reconfigure(self, rate: float, capacity: float) -> None:
        self._refill(time.monotonic())
        self.rate, self.capacity = rate, capacity
        self._tokens = min(self._tokens, capacity)


def shared_bucket(limit: RateLimit | None, share: float, bucket: TokenBucket | None) -> TokenBucket | None:
    """This member's ``share`` of a subscription's group-wide rate limit as a token bucket: ``bucket``
    reconfigured in place (its tokens carry over), a new one, or None when there is no limit."""
    if limit is None:
        return None
    rate, capacity = limit.per_second * share, max(1.0, limit.burst * share)
    if bucket is None:
        return TokenBucket(rate, capacity)
    bucket.reconfigure(rate, capacity)
    return bucket


class Breaker:
    """Closed until ``threshold`` consecutive failures; then open for ``cooldown`` seconds; then half-open,
    when exactly one probe may be sent. Each failed probe doubles the cool-down up to ``max_cooldown``
    (so deliveries spilled while it is open circulate less and less often); a success resets it.

    The probe is reserved when it is *sent* (``sending``), so a delivery that is queued and then spilled
    never holds the probe. Every sent probe ends in ``success``, ``failure`` or ``release`` (no
    verdict), so the breaker cannot wedge."""

    __slots__ = (
        "_open_until",
        "_probing",
        "base_cooldown",
        "cooldown",
        "failures",
        "max_cooldown",
        "threshold",
        "tripped",
    )

    def __init__(self, threshold: int, cooldown: float, max_cooldown: float | None = None) -> None:
        self.threshold = threshold
        self.base_cooldown = self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown or cooldown)
        self.failures = 0
        self.tripped = self.failures >= threshold  # not closed: the failures reached the threshold
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if not self.tripped:
            return "closed"
        return "open" if time.monotonic() < self._open_until or self._probing else "half-open"

    def cooling(self) -> bool:
        """Open, and its cool-down still running."""
        return self.tripped and time.monotonic() < self._open_until

    def accepting(self) -> bool:
        """May the lane take new deliveries? Not while open, nor while a probe is out."""
        return not self.tripped or (not self._probing and time.monotonic() >= self._open_until)

    def sending(self) -> bool:
        """About to send: True if allowed (when half-open this reserves the one probe)."""
        if not self.tripped:
            return True
        if self._probing or time.monotonic() < self._open_until:
            return False
        self._probing = True
        return True

    def remaining(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def success(self) -> None:
        self.failures = 0
        self.tripped = self.failures >= self.threshold
        self._probing = False
        self.cooldown = self.base_cooldown

    def release(self) -> None:
        """The attempt ended without telling anything about the endpoint."""
        self._probing = False

    def failure(self) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the breaker."""
        self.failures += 1
        self.tripped = self.failures >= self.threshold
        was_probing, self._probing = self._probing, False
        if self.tripped:
            if was_probing:  # the endpoint is still down: wait longer before the next probe
                self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self._open_until = time.monotonic() + self.cooldown
            return True
        return False


class Waiter(Protocol):
    def wake(self) -> bool: ...


class HostSlots:
    """At most ``limit`` deliveries in flight per host (scheme, host and port), across every lane.

    A lane takes a slot before it starts a send and gives it back when the send ends. When the host is
    saturated the lane queues here (its deliveries stay in its queue, where flow control and
    ``max_wait`` see them) and is handed a slot, in turn, when one frees: ``give_back`` passes the slot
    to the first lane in line (``wake``: the lane starts a send with it, without taking it again), and
    to the next one if that lane has nothing to start any more (its queue spilled or closed while it
    waited), in one pass, so a freed slot never stays idle while lanes wait for it. Without this,
    thousands of lanes with one delivery each would all start sends that then wait inside the
    connection pool. Waiting costs a lane nothing but its place in its host's line."""

    __slots__ = ("_busy", "_waiting", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: dict[str, int] = {}
        self._waiting: dict[str, deque[Waiter]] = {}

    def take(self, host: str) -> bool:
        busy = self._busy.get(host, 0)
        if busy >= self.limit:
            return False
        self._busy[host] = busy + 1
        return True

    def wait(self, host: str, lane: Waiter) -> None:
        """Hand ``lane`` a slot of ``host`` (``lane.wake()``) when one frees (a lane waits at most once at
        a time). ``wake`` returns True when the lane has not used the slot: it goes to the next lane."""
        waiting = self._waiting.get(host)
        if waiting is None:
            waiting = self._waiting[host] = deque()
        waiting.append(lane)

    def give_back(self, host: str) -> None:
        """A slot of ``host`` freed: it goes to the first lane in line that uses it, or is released."""
        waiting_by_host = self._waiting
        while (waiting := waiting_by_host.get(host)) is not None:
            lane = waiting.popleft()
            if not waiting:
                del waiting_by_host[host]
            if not lane.wake():
                return  # the lane holds the slot now
        busy = self._busy[host] - 1
        if busy:
            self._busy[host] = busy
        else:
            del self._busy[host]

    def in_flight(self, host: str) -> int:
        return self._busy.get(host, 0)
