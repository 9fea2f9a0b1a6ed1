"""deliver: one lane per subscription, with a token bucket, an in-flight cap, a breaker and a small queue.

Contract of ``Lane.offer(delivery)``: it never blocks and never awaits. It returns ``None`` when the lane
took the delivery (it will be reported to ``on_done`` exactly once: sent, or spilled later), or the
reason it refused (``circuit open``, ``rate limited``, ``lane full``): the caller then spills the
delivery to a retry tier, so a slow or failing subscriber never holds back the partition or the other
subscribers. A queued delivery that waits longer than ``max_wait`` is spilled by ``expire`` too: the
lane is too slow for it, and it must not pin its partition's offset.

Sends are started by ``_pump`` whenever an in-flight slot of the lane, a connection slot of the host
(``HostSlots``), a token and a queued delivery are all available; when only the token is missing a
single timer re-runs ``_pump`` when the next token is due, and when the host is saturated the lane is
woken when a slot frees. No task waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from fanout.errors import DeliveryError, NotAttempted, RetryableDelivery
from fanout.model import Delivery
from fanout.pipeline.limits import Breaker, HostSlots, TokenBucket, shared_bucket
from fanout.subscription import Subscription

log = logging.getLogger("fanout.lanes")

MIN_SHARE = 1e-6
Send = Callable[[Delivery], Awaitable[object]]
Done = Callable[[Delivery, DeliveryError | None, float], None]


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
        self._waiting_host = False
        self.host = sub.origin
        self._configure_bucket()

    def _configure_bucket(self) -> None:
        self.bucket = shared_bucket(self.sub.rate_limit, self._share, self.bucket)

    def update(self, sub: Subscription) -> None:
        """Adopt a new version of the subscription (limits apply from now on)."""
        self.sub = sub
        self.host = sub.origin
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
        self._owner.enqueued(self)
        self._pump()
        return None

    def spill_delay(self, reason: str) -> float | None:
        """How long a delivery refused for ``reason`` should wait: the breaker's cool-down, or the default."""
        return self.breaker.remaining() or None if reason == "circuit open" else None

    def _pop(self) -> Delivery:
        delivery = self.queue.popleft()
        self._owner.dequeued(self)
        return delivery

    def _wake(self) -> None:
        self._waiting_host = False
        self._pump()

    def head_age(self, now: float) -> float:
        return now - self.queue[0].queued_at if self.queue else 0.0

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _pump(self) -> None:
        queue = self.queue
        breaker = self.breaker
        slots = self._owner.slots
        while queue and self.in_flight < self.sub.max_in_flight and not self._waiting_host:
            if queue[0].ticket.fenced:
                self._pop()
                continue
            if breaker.failures >= breaker.threshold and not breaker.accepting():
                return
            if not slots.take(self.host):
                self._waiting_host = True
                slots.wait(self.host, self._wake)
                return
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait > 0:
                    slots.give_back(self.host)
                    self.rate_waits += 1
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    return
            if not breaker.sending():
                slots.give_back(self.host)
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
        except NotAttempted as exc:  # no connection slot in time: backpressure, like a full lane
            breaker.release()
            error = Spilled(exc.error)
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
            self._owner.slots.give_back(self.host)
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


class _RatedLane(Protocol):
    sub: Subscription

    def set_share(self, share: float) -> None: ...

    def update(self, sub: Subscription) -> None: ...


L = TypeVar("L", bound=_RatedLane)


class LaneRegistry(Generic[L]):
    """Lanes by subscription id, created on first use (``_new_lane``); when a subscription changes, its
    lane takes the new definition and this member's share of its rate."""

    def __init__(self) -> None:
        self._share_of: Callable[[Subscription], float] = lambda sub: 1.0
        self.by_id: dict[str, L] = {}

    def _new_lane(self, sub: Subscription, share: float) -> L:
        raise NotImplementedError

    def get(self, sub: Subscription) -> L:
        lane = self.by_id.get(sub.id)
        if lane is None:
            lane = self.by_id[sub.id] = self._new_lane(sub, self._share_of(sub))
        elif lane.sub is not sub:
            lane.set_share(self._share_of(sub))
            lane.update(sub)
        return lane

    def set_shares(self, share_of: Callable[[Subscription], float]) -> None:
        """Each subscription's share of its rate on this member (see ``fanout.pipeline.share``)."""
        self._share_of = share_of
        for lane in self.by_id.values():
            lane.set_share(share_of(lane.sub))


class Lanes(LaneRegistry[Lane]):
    """Lanes by subscription id, created on first use and updated when a subscription changes.

    Flow control. A lane is *congested* when its queue is half full while its oldest delivery is still
    young (under half of ``max_wait``): the lane is busy but keeping up, so fetching more would only
    overflow it. While any lane is congested, or all lanes together queue ``high_water`` deliveries,
    ``on_pressure(True)`` asks the consumer to stop fetching; ``on_pressure(False)`` resumes it once the
    congested lanes are down to a quarter (or turned out to be slow: their heads aged). So plain
    saturation gives backpressure, not spills, while a slow or stuck lane never holds the others back:
    its deliveries age past ``max_wait`` and spill.
    """

    def __init__(
        self,
        send: Send,
        on_done: Done,
        limits: LaneLimits,
        high_water: int = 1 << 62,
        on_pressure: Callable[[bool], None] = lambda held: None,
        connections_per_host: int = 1 << 30,
    ) -> None:
        super().__init__()
        self.send = send
        self.slots = HostSlots(connections_per_host)
        self.waiting: set[Lane] = set()
        self.on_done = on_done
        self.limits = limits
        self.queued = 0
        self.high_water = high_water
        self.held = False
        self.congested: set[Lane] = set()
        self._congested_at = max(1, limits.queue_size // 2)
        self._relieved_at = limits.queue_size // 4
        self._young = limits.max_wait / 2
        self._on_pressure = on_pressure
        self._next_scan = 0.0

    def enqueued(self, lane: Lane) -> None:
        self.queued += 1
        self.waiting.add(lane)
        if (
            len(lane.queue) >= self._congested_at
            and lane not in self.congested
            and lane.head_age(time.monotonic()) < self._young
        ):
            self.congested.add(lane)
            self._update()
        elif not self.held and self.queued >= self.high_water:
            self._update()

    def dequeued(self, lane: Lane) -> None:
        self.queued -= 1
        if not lane.queue:
            self.waiting.discard(lane)
        if lane in self.congested and len(lane.queue) <= self._relieved_at:
            self.congested.discard(lane)
            self._update()
        elif self.held and not self.congested and self.queued <= self.high_water // 2:
            self._update()

    def _update(self) -> None:
        backlog = self.queued > self.high_water // 2 if self.held else self.queued >= self.high_water
        held = bool(self.congested) or backlog
        if held != self.held:
            self.held = held
            self._on_pressure(held)

    def _new_lane(self, sub: Subscription, share: float) -> Lane:
        return Lane(sub, self, share)

    def remove(self, sub_id: str) -> list[Delivery]:
        lane = self.by_id.pop(sub_id, None)
        if lane is None:
            return []
        queued = lane.close()
        if lane in self.congested:
            self.congested.discard(lane)
            self._update()
        return queued

    def expire(self) -> None:
        """Spill what waited too long; a congested lane whose head aged is slow, not congested.

        Queues are scanned every quarter of ``max_wait`` (so a delivery spills after between 1 and 1.25
        times ``max_wait``): with thousands of lanes waiting for a busy host, scanning them all at every
        tick cost a few microseconds per delivery."""
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.limits.max_wait / 4
            for lane in list(self.waiting):
                lane.expire(now)
        aged = {lane for lane in self.congested if lane.head_age(now) >= self._young or lane._closed}
        if aged:
            self.congested -= aged
            self._update()

    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.by_id.values())
