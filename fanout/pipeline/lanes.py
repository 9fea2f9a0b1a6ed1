"""deliver: one lane per subscription, with a token bucket, an in-flight cap, a breaker and a small queue.

Contract of ``Lane.offer(delivery)``: it never blocks and never awaits. It returns ``None`` when the lane
took the delivery (it will be reported to ``on_done`` exactly once: sent, or spilled later), or the
reason it refused (``circuit open``, ``rate limited``, ``lane full``): the caller then spills the
delivery to a retry tier, so a slow or failing subscriber never holds back the partition or the other
subscribers. A queued delivery that waits longer than ``max_wait`` is spilled by ``expire`` too: the
lane is too slow for it, and it must not pin its partition's offset.

Sends are started by ``_pump`` whenever a slot, a token and a queued delivery are all available; when
only the token is missing a single timer re-runs ``_pump`` when the next token is due. No task waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fanout.errors import DeliveryError, RetryableDelivery
from fanout.model import Delivery
from fanout.subscription import Subscription

log = logging.getLogger("fanout.lanes")

MIN_SHARE = 1e-6
Send = Callable[[Delivery], Awaitable[object]]
Done = Callable[[Delivery, DeliveryError | None, float], None]


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

    def reconfigure(self, rate: float, capacity: float) -> None:
        self._refill(time.monotonic())
        self.rate, self.capacity = rate, capacity
        self._tokens = min(self._tokens, capacity)


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
    )

    def __init__(self, threshold: int, cooldown: float, max_cooldown: float | None = None) -> None:
        self.threshold = threshold
        self.base_cooldown = self.cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown or cooldown)
        self.failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "open" if time.monotonic() < self._open_until or self._probing else "half-open"

    def accepting(self) -> bool:
        """May the lane take new deliveries? Not while open, nor while a probe is out."""
        return self.failures < self.threshold or (not self._probing and time.monotonic() >= self._open_until)

    def sending(self) -> bool:
        """About to send: True if allowed (when half-open this reserves the one probe)."""
        if self.failures < self.threshold:
            return True
        if self._probing or time.monotonic() < self._open_until:
            return False
        self._probing = True
        return True

    def remaining(self) -> float:
        return max(0.0, self._open_until - time.monotonic())

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        self.cooldown = self.base_cooldown

    def release(self) -> None:
        """The attempt ended without telling anything about the endpoint."""
        self._probing = False

    def failure(self) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the breaker."""
        self.failures += 1
        was_probing, self._probing = self._probing, False
        if self.failures >= self.threshold:
            if was_probing:  # the endpoint is still down: wait longer before the next probe
                self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self._open_until = time.monotonic() + self.cooldown
            return True
        return False


@dataclass(frozen=True)
class LaneLimits:
    queue_size: int
    max_wait: float
    breaker_failures: int
    breaker_cooldown: float
    breaker_max_cooldown: float | None = None


class Lane:
    """The delivery lane of one subscription."""

    def __init__(self, sub: Subscription, owner: Lanes, share: float) -> None:
        self.sub = sub
        self._owner = owner
        self._limits = owner.limits
        self._share = max(share, MIN_SHARE)
        self.queue: deque[Delivery] = deque()
        self.in_flight = 0
        limits = self._limits
        self.breaker = Breaker(limits.breaker_failures, limits.breaker_cooldown, limits.breaker_max_cooldown)
        self.bucket: TokenBucket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.rate_waits = 0
        self._configure_bucket()

    def _configure_bucket(self) -> None:
        limit = self.sub.rate_limit
        if limit is None:
            self.bucket = None
            return
        rate = limit.per_second * self._share
        capacity = max(1.0, limit.burst * self._share)
        if self.bucket is None:
            self.bucket = TokenBucket(rate, capacity)
        else:
            self.bucket.reconfigure(rate, capacity)

    def update(self, sub: Subscription) -> None:
        """Adopt a new version of the subscription (limits apply from now on)."""
        self.sub = sub
        self._configure_bucket()
        self._pump()

    def set_share(self, share: float) -> None:
        """This member's share of the group-wide rate (its fraction of the source partitions)."""
        self._share = max(share, MIN_SHARE)
        self._configure_bucket()

    @property
    def full_reason(self) -> str:
        return (
            "rate limited"
            if self.bucket is not None and self.in_flight < self.sub.max_in_flight
            else "lane full"
        )

    def offer(self, delivery: Delivery) -> str | None:
        if self._closed:
            return "lane closed"
        if not self.breaker.accepting():
            return "circuit open"
        if len(self.queue) >= self._limits.queue_size:
            return self.full_reason
        delivery.queued_at = time.monotonic()
        self.queue.append(delivery)
        self._owner.enqueued()
        self._pump()
        return None

    def spill_delay(self, reason: str) -> float | None:
        """How long a delivery refused for ``reason`` should wait: the breaker's cool-down, or the default."""
        return self.breaker.remaining() or None if reason == "circuit open" else None

    def _pop(self) -> Delivery:
        self._owner.dequeued()
        return self.queue.popleft()

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _pump(self) -> None:
        queue = self.queue
        breaker = self.breaker
        while queue and self.in_flight < self.sub.max_in_flight:
            if queue[0].ticket.fenced:
                self._pop()
                continue
            if breaker.failures >= breaker.threshold and not breaker.accepting():
                return
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait > 0:
                    self.rate_waits += 1
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    return
            if not breaker.sending():
                return
            self.in_flight += 1
            task = asyncio.ensure_future(self._run(self._pop()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, delivery: Delivery) -> None:
        started = time.monotonic()
        error: DeliveryError | None = None
        breaker = self.breaker
        try:
            await self._owner.send(delivery)
            breaker.success()
        except RetryableDelivery as exc:
            error = exc
            if breaker.failure():
                log.warning(
                    "circuit opened for %.0fs after %d consecutive failures",
                    breaker.remaining(),
                    breaker.failures,
                    extra={
                        "subscription": self.sub.id,
                        "event_id": delivery.event.id,
                        "traceparent": delivery.traceparent,
                    },
                )
                self._spill_all(Spilled("circuit open", retry_after=breaker.remaining()))
        except DeliveryError as exc:
            error = exc
            if exc.status is not None:
                breaker.success()  # the endpoint answered: it is up
            else:
                breaker.release()
        except Exception as exc:  # a bug in a sender must not strand the offset
            breaker.release()
            error = RetryableDelivery(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
        self._owner.on_done(delivery, error, time.monotonic() - started)
        self._pump()

    def _spill_all(self, reason: Spilled) -> None:
        while self.queue:
            self._owner.on_done(self._pop(), reason, 0.0)

    def expire(self, now: float) -> None:
        """Spill queued deliveries that waited longer than ``max_wait``: the endpoint is too slow for them."""
        limit = now - self._limits.max_wait
        queue = self.queue
        if queue and queue[0].queued_at < limit:
            reason = Spilled(self.full_reason)
            while queue and queue[0].queued_at < limit:
                self._owner.on_done(self._pop(), reason, 0.0)

    def close(self) -> list[Delivery]:
        """Stop taking deliveries; return the queued ones (not yet attempted)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued = []
        while self.queue:
            queued.append(self._pop())
        return queued

    @property
    def idle(self) -> bool:
        return not self.queue and self.in_flight == 0


class Spilled(RetryableDelivery):
    """Not an attempt: the lane could not take (or keep) the delivery. ``error`` is the reason."""


class Lanes:
    """Lanes by subscription id, created on first use and updated when a subscription changes.

    ``queued`` counts deliveries waiting in every lane's queue. ``on_pressure(True)`` is called when it
    reaches ``high_water`` (the dispatcher stops fetching) and ``on_pressure(False)`` when it is back
    under half, so under plain saturation queues stay short and nothing spills.
    """

    def __init__(
        self,
        send: Send,
        on_done: Done,
        limits: LaneLimits,
        high_water: int = 1 << 62,
        on_pressure: Callable[[bool], None] = lambda held: None,
    ) -> None:
        self.send = send
        self.on_done = on_done
        self.limits = limits
        self._share_of: Callable[[Subscription], float] = lambda sub: 1.0
        self.queued = 0
        self.high_water = high_water
        self.held = False
        self._on_pressure = on_pressure
        self.by_id: dict[str, Lane] = {}

    def enqueued(self) -> None:
        self.queued += 1
        if not self.held and self.queued >= self.high_water:
            self.held = True
            self._on_pressure(True)

    def dequeued(self) -> None:
        self.queued -= 1
        if self.held and self.queued <= self.high_water // 2:
            self.held = False
            self._on_pressure(False)

    def get(self, sub: Subscription) -> Lane:
        lane = self.by_id.get(sub.id)
        if lane is None:
            lane = self.by_id[sub.id] = Lane(sub, self, self._share_of(sub))
        elif lane.sub is not sub:
            lane.set_share(self._share_of(sub))
            lane.update(sub)
        return lane

    def set_shares(self, share_of: Callable[[Subscription], float]) -> None:
        """Each subscription's share of its rate on this member (see ``fanout.pipeline.share``)."""
        self._share_of = share_of
        for lane in self.by_id.values():
            lane.set_share(share_of(lane.sub))

    def remove(self, sub_id: str) -> list[Delivery]:
        lane = self.by_id.pop(sub_id, None)
        return lane.close() if lane is not None else []

    def expire(self) -> None:
        now = time.monotonic()
        for lane in list(self.by_id.values()):
            if lane.queue:
                lane.expire(now)

    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.by_id.values())
