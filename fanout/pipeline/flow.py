"""Flow control over the unordered lanes: when the consumer should stop fetching.

The consumer asks the dispatcher to take each batch (``model.ports.BatchTarget``); the dispatcher
answers from ``Lanes.ready``, which this module sets and clears on the event loop. What the consumer
does while it is clear (``fanout.kafka.pauses.Hold``): a short hold skips ``consume()`` (librdkafka keeps
its prefetched records, so resuming is immediate); a hold longer than a second pauses every partition
and polls, so that rebalances are still served.
"""

from __future__ import annotations

import asyncio
import time

from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline.lanes import Done, Lane, LaneLimits, Send
from fanout.pipeline.limits import HostSlots
from fanout.pipeline.pace import LoopLag
from fanout.pipeline.registry import LaneRegistry


class Lanes(LaneRegistry[Lane]):
    """Lanes by subscription id, created on first use and updated when a subscription changes, with the
    flow control that tells the consumer when to stop fetching.

    A lane is *congested* when half its queue is filled while it still keeps up (its endpoint would
    start everything it queues within ``max_wait``): it is busy, or the process is, and fetching more
    would only overflow it. It is congested too while deliveries coming back from spills fill it past
    its bound (they are taken up to twice the bound rather than spilled again: the pace they were
    scheduled at was too optimistic, and fetching fewer of them is the remedy). While any lane is
    congested, or all lanes together queue ``high_water`` deliveries, the lanes are ``held`` and
    ``ready`` is cleared: the dispatcher refuses batches and the consumer stops fetching. ``ready`` is
    set again once the congested lanes are down to a quarter (or, below their bound, stopped keeping
    up: their endpoints turned slow) and the lanes queue at most half of ``high_water``. So saturation,
    a busy process included, gives backpressure, not spills, while a slow or stuck lane never holds the
    others back: it takes only what it can start within ``max_wait`` and spills the rest at its pace.
    ``lag`` measures how late the loop runs (started by the first ``expire``).
    """

    def __init__(
        self,
        send: Send,
        on_done: Done,
        limits: LaneLimits,
        high_water: int = 1 << 62,
        connections_per_host: int = 1 << 30,
    ) -> None:
        super().__init__()
        self.send = send
        self.slots = HostSlots(connections_per_host)
        self.waiting: list[Lane] = []  # lanes that queued since the last scan (``Lane.listed``)
        self.on_done = on_done
        self.limits = limits
        self.queued = 0
        self.high_water = high_water
        self.held = False
        self.congested: set[Lane] = set()
        self._congested_at = max(1, limits.queue_size // 2)
        self._relieved_at = limits.queue_size // 4
        self._next_scan = 0.0
        self.lag = LoopLag()
        self.tasks: dict[Delivery, asyncio.Future[None]] = {}  # every lane's requests out
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first request a lane starts

    def enqueued(self, lane: Lane) -> None:
        self.queued += 1
        if not lane.listed:
            lane.listed = True
            self.waiting.append(lane)
        queued = len(lane.queue)
        if (
            queued >= self._congested_at
            and lane not in self.congested
            and (queued >= self.limits.queue_size or lane.keeps_up())
        ):
            self.congested.add(lane)
            self._update()
        elif not self.held and self.queued >= self.high_water:
            self._update()

    def dequeued(self, lane: Lane) -> None:
        self.queued -= 1
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
            if held:
                self.ready.clear()
            else:
                self.ready.set()

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
        """Spill what slow endpoints can no longer start in time; a congested lane that stopped keeping
        up is slow, not congested.

        Queues are scanned every quarter of ``max_wait`` (so a stalled endpoint's queue spills after
        between 1 and 1.25 times ``max_wait``): with thousands of lanes waiting for a busy host, scanning
        them all at every tick cost a few microseconds per delivery. The lanes scanned are those that
        queued since the previous scan and those that still queue (a lane is listed once, by a flag,
        not looked up in a set per delivery)."""
        self.lag.start()
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.limits.max_wait / 4
            lag = self.lag.peak
            waiting, self.waiting = self.waiting, []
            for lane in waiting:  # one pass: a lane that queues again meanwhile is listed once
                lane.listed = False
                if lane.queue:
                    lane.expire(now, lag)
                    if lane.queue and not lane.listed:
                        lane.listed = True
                        self.waiting.append(lane)
        full = self.limits.queue_size
        slow = {
            lane for lane in self.congested if lane.closed or (len(lane.queue) < full and not lane.keeps_up())
        }
        if slow:
            self.congested -= slow
            self._update()

    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.by_id.values())
