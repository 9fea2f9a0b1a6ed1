"""deliver: one lane per subscription, with a token bucket, an in-flight cap, a breaker and a small queue.

Contract of ``Lane.offer(delivery)``: it never blocks and never awaits. It returns ``None`` when the lane
took the delivery (it will be reported to ``on_done`` exactly once: sent, or spilled later), or a
``Spilled`` saying why it refused and how long the delivery should wait before it comes back: the caller
then spills the delivery to a retry tier, so a slow or failing subscriber never holds back the partition
or the other subscribers.

What a lane takes (its pace: ``fanout.pipeline.pace``): a new delivery only if its rate limit and its
endpoint's latency let it start within ``max_wait`` and the queue has room; a delivery coming back from a
spill (its not-before time was its slot) up to twice the queue's bound; nothing while its breaker cools
down. A refused delivery comes back at the lane's next free slot, so a backlog on a paced lane goes
through a retry tier once and drains at the lane's pace. Queued deliveries spill later (``expire``) only
when the endpoint turns slow: one of the lane's requests, or its wait for a connection slot of its host,
is older than ``max_wait`` (the loop's own lag not counted). A queue that is long because the process is
busy is fanout's pace, not the endpoint's: ``Lanes`` (``fanout.pipeline.flow``) holds fetching instead.
``Lane.spill`` is the one way a lane gives a delivery up, whatever the reason, so every spill is spaced
at the lane's pace.

Sends are started by ``_pump`` whenever an in-flight slot of the lane, a connection slot of the host
(``HostSlots``), a token and a queued delivery are all available; when only the token is missing a
single timer re-runs ``_pump`` when the next token is due, and when the host is saturated the lane
queues at its host and is handed a slot, in turn, when one frees. No task waits.

With thousands of busy lanes what a delivery costs is mostly the memory it touches: a lane is one
slotted object with its breaker and pace, and holds no timer, task or callback of its own while it
waits (its requests' tasks are kept by the registry, ``LaneOwner.tasks``), nor a queue while it queues
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from fanout.model.errors import DeliveryError, NotAttempted, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline.limits import Breaker, HostSlots, TokenBucket, shared_bucket
from fanout.pipeline.pace import LoopLag, Pace

log = logging.getLogger("fanout.lanes")

MIN_SHARE = 1e-6
# The queue of every lane that queues nothing: never appended to (``Lane.offer`` gives a lane its own
# deque first), so an idle lane holds no deque of its own (about 0.7 KiB each).
_IDLE: deque[Delivery] = deque()
Send = Callable[[Delivery], Awaitable[object]]
Done = Callable[[Delivery, DeliveryError | None, float], None]


@dataclass(frozen=True)
class LaneLimits:
    queue_size: int
    max_wait: float
    breaker_failures: int
    breaker_cooldown: float
    breaker_max_cooldown: float | None = None


class LaneOwner(Protocol):
    """What a lane shares with the other lanes of its registry (``fanout.pipeline.flow.Lanes``): the
    sender, the outcome callback, the host connection slots, the loop's lag, and the flow control that
    hears every delivery queued and dequeued."""

    send: Send
    on_done: Done
    limits: LaneLimits
    slots: HostSlots
    lag: LoopLag
    tasks: dict[Delivery, asyncio.Future[None]]
    loop: asyncio.AbstractEventLoop | None  # the loop requests start in, once known

    def enqueued(self, lane: Lane) -> None: ...

    def dequeued(self, lane: Lane) -> None: ...


class Lane:
    """The delivery lane of one subscription."""

    __slots__ = (
        "_limits",
        "_most",
        "_owner",
        "_sending",
        "_share",
        "_timer",
        "_waiting_host",
        "breaker",
        "bucket",
        "closed",
        "host",
        "in_flight",
        "listed",
        "pace",
        "queue",
        "rate_waits",
        "sub",
    )

    def __init__(self, sub: Subscription, owner: LaneOwner, share: float) -> None:
        self.sub = sub
        self._most = sub.max_in_flight
        self._owner = owner
        self._limits = owner.limits
        self._share = max(share, MIN_SHARE)
        self.queue: deque[Delivery] = _IDLE
        self.in_flight = 0
        limits = self._limits
        self.breaker = Breaker(limits.breaker_failures, limits.breaker_cooldown, limits.breaker_max_cooldown)
        self.bucket: TokenBucket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.listed = False  # in its registry's list of lanes to scan (``Lanes.expire``)
        self.rate_waits = 0
        self._waiting_host = False
        self.host = sub.origin
        self.pace = Pace()
        self._sending: dict[Delivery, float] = {}  # monotonic start of each request out
        self._configure_bucket()

    def _configure_bucket(self) -> None:
        self.bucket = shared_bucket(self.sub.rate_limit, self._share, self.bucket)

    def update(self, sub: Subscription) -> None:
        """Adopt a new version of the subscription (limits apply from now on)."""
        self.sub = sub
        self._most = sub.max_in_flight
        self.host = sub.origin
        self._configure_bucket()
        self._start()

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

    def offer(self, delivery: Delivery) -> Spilled | None:
        if self.closed:
            return Spilled("lane closed")
        breaker = self.breaker
        if breaker.tripped and breaker.cooling():
            return self.spill("circuit open")
        queue = self.queue
        ahead = len(queue)
        limits = self._limits
        if delivery.spilled:
            if ahead >= 2 * limits.queue_size:
                return self.spill(self.full_reason)
        elif ahead >= limits.queue_size or (
            (self.bucket is not None or ahead + self.in_flight >= self._most)
            and self.pace.wait(ahead, self.in_flight, self._most, self.bucket, lag=self._owner.lag.peak)
            > limits.max_wait
        ):
            return self.spill(self.full_reason)
        delivery.queued_at = time.monotonic()
        if queue is _IDLE:
            queue = self.queue = deque()
        queue.append(delivery)
        self._owner.enqueued(self)
        if self._pump(False):
            self._owner.slots.give_back(self.host)
        return None

    def spill(self, reason: str, stalled: float = 0.0) -> Spilled:
        """A delivery the lane cannot take or keep, due back at the lane's next free slot: after what it
        queues, after its earlier spills and after its breaker's cool-down (``Pace.schedule``; ``stalled``:
        the endpoint is at least that slow now). Every spill of the lane goes through here."""
        now = time.monotonic()
        pace, breaker, most = self.pace, self.breaker, self.sub.max_in_flight
        earliest = now + breaker.remaining() if breaker.cooling() else 0.0
        wait = pace.wait(len(self.queue), self.in_flight, most, self.bucket, stalled)
        rate = pace.rate(most, self.bucket, stalled)
        return Spilled(
            reason, retry_after=pace.schedule(now, wait, rate, earliest, self._limits.max_wait / 4)
        )

    def keeps_up(self) -> bool:
        """Busy but healthy: the lane, its endpoint's share of the latency only, can start everything it
        queues within ``max_wait``."""
        ahead = max(0, len(self.queue) - 1)
        wait = self.pace.wait(
            ahead, self.in_flight, self.sub.max_in_flight, self.bucket, lag=self._owner.lag.peak
        )
        return wait <= self._limits.max_wait and not self.breaker.cooling()

    def _pop(self) -> Delivery:
        queue = self.queue
        delivery = queue.popleft()
        if not queue:
            self.queue = _IDLE
        self._owner.dequeued(self)
        return delivery

    def wake(self) -> bool:
        """A connection slot of the host is handed to the lane (``HostSlots.give_back``): start what can
        start. True if the lane did not use the slot (it goes to the next lane in line)."""
        self._waiting_host = False
        return self._pump(True)

    def _on_timer(self) -> None:
        self._timer = None
        self._start()

    def _start(self) -> None:
        if self._pump(False):
            self._owner.slots.give_back(self.host)

    def _pump(self, held: bool) -> bool:
        """Start every send that can start now. ``held``: the lane was handed a connection slot of its
        host. Returns True when the lane ends up holding a slot it did not use (given back by the
        caller), so that a woken lane never hands a slot on from inside ``HostSlots.give_back``."""
        queue = self.queue
        breaker = self.breaker
        most = self._most
        while queue and self.in_flight < most and not self._waiting_host:
            if queue[0].ticket.fenced:
                self._pop()
                continue
            if breaker.tripped and not breaker.accepting():
                break
            if not held:
                slots = self._owner.slots
                if not slots.take(self.host):
                    self._waiting_host = True
                    slots.wait(self.host, self)
                    break
                held = True
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait > 0:
                    self.rate_waits += 1
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    break
            if breaker.tripped and not breaker.sending():
                break
            self.in_flight += 1
            held = False
            delivery = self._pop()
            owner = self._owner
            loop = owner.loop
            if loop is None:  # get_running_loop() makes a getpid() system call in Python 3.11: once only
                loop = owner.loop = asyncio.get_running_loop()
            owner.tasks[delivery] = loop.create_task(self._run(delivery))
        return held

    async def _run(self, delivery: Delivery) -> None:
        started = self._sending[delivery] = time.monotonic()
        error: DeliveryError | None = None
        breaker = self.breaker
        answered = False
        try:
            await self._owner.send(delivery)
            breaker.success()
            answered = True
        except NotAttempted:  # no connection slot in time: backpressure, like a full lane
            breaker.release()
            error = self.spill("pool timeout")
        except RetryableDelivery as exc:
            error = exc
            answered = exc.status is not None
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
                self._spill_all("circuit open")
        except DeliveryError as exc:
            error = exc
            if exc.status is not None:
                breaker.success()  # the endpoint answered: it is up
                answered = True
            else:
                breaker.release()
        except Exception as exc:  # a bug in a sender must not strand the offset
            breaker.release()
            error = RetryableDelivery(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
            del self._sending[delivery]
            owner = self._owner
            del owner.tasks[delivery]  # no await below: the task runs to its end
            owner.slots.give_back(self.host)
        duration = time.monotonic() - started
        if answered:
            self.pace.answered(duration)
        self._owner.on_done(delivery, error, duration)
        error = None  # the traceback holds this frame: keep no cycle for the collector to find
        if self._pump(False):
            owner.slots.give_back(self.host)

    def _spill_all(self, reason: str) -> None:
        while self.queue:
            delivery = self._pop()
            self._owner.on_done(delivery, self.spill(reason), 0.0)

    def stalled(self, now: float) -> float:
        """How long the endpoint has held the lane up: its oldest request out, or (waiting for a
        connection slot of its host) its oldest queued delivery."""
        oldest = next(iter(self._sending.values()), now)  # requests start in order: the first is the oldest
        if self._waiting_host and self.queue:
            oldest = min(oldest, self.queue[0].queued_at)
        return now - oldest

    def expire(self, now: float, lag: float = 0.0) -> None:
        """The endpoint turned slow (``stalled`` for longer than ``max_wait``, less the loop's ``lag``):
        spill the queued deliveries it can no longer start within ``max_wait``, the newest ones, due back
        in queue order behind those it keeps. A queue that is merely paced, or that waits for a busy
        loop, stays."""
        if not self.queue:
            return
        max_wait = self._limits.max_wait
        stalled = self.stalled(now) - lag
        if stalled < max_wait:
            return
        keep = self.pace.keep(max_wait, self.sub.max_in_flight, self.bucket, stalled)
        queue = self.queue
        newest: list[Delivery] = []
        while len(queue) > keep:
            newest.append(queue.pop())
            if not queue:
                self.queue = _IDLE
            self._owner.dequeued(self)
        for delivery in reversed(newest):
            self._owner.on_done(delivery, self.spill("endpoint slow", stalled), 0.0)

    def close(self) -> list[Delivery]:
        """Stop taking deliveries; return the queued ones (not yet attempted)."""
        self.closed = True
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
    """Not an attempt: the lane could not take (or keep) the delivery. ``error`` is the reason (``circuit
    open``, ``rate limited``, ``lane full``, ``endpoint slow``, ``lane closed``) and ``retry_after`` the
    seconds until it should come back (``Lane.spill``)."""
