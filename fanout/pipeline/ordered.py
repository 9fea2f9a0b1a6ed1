"""Key-ordered delivery (``ordering: key``): per Kafka key, one delivery at a time, in offset order.

Each ordered subscription is consumed by its own consumer group and has one ``KeyedLane``. Deliveries
queue per key; at most ``max_in_flight`` keys are being delivered at once, under the subscription's
token bucket. A failing delivery retries *in place* (a timer, not a retry topic) on the subscription's
schedule until it succeeds or the schedule or ``max_age`` runs out; then it is dead-lettered and the key
moves on. A failing key holds back only itself: other keys keep flowing (until the partition's
``max_uncommitted`` bound, because the failing record pins the partition's committed offset).

Records without a key have no order to keep: each is delivered on its own.

``offer`` never refuses (ordering forbids spilling) and never blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable

from fanout.model.errors import DeliveryError, NotAttempted, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline.lanes import MIN_SHARE, Send, Spilled
from fanout.pipeline.limits import TokenBucket, shared_bucket
from fanout.pipeline.registry import LaneRegistry
from fanout.pipeline.settle import Settler

NOT_ATTEMPTED_DELAY = 1.0


def _key(delivery: Delivery) -> Hashable:
    event = delivery.event
    return event.key if event.key is not None else (event.partition, event.offset)


class KeyedLane:
    def __init__(self, sub: Subscription, send: Send, settler: Settler, share: float) -> None:
        self.sub = sub
        self._send = send
        self._settler = settler
        self._share = max(share, MIN_SHARE)
        self.keys: dict[Hashable, deque[Delivery]] = {}
        self._ready: deque[Hashable] = deque()
        self.in_flight = 0
        self.bucket: TokenBucket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._retry_timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self.rate_waits = 0
        self._configure_bucket()

    def _configure_bucket(self) -> None:
        self.bucket = shared_bucket(self.sub.rate_limit, self._share, self.bucket)

    def update(self, sub: Subscription) -> None:
        self.sub = sub
        self._configure_bucket()
        self._pump()

    def set_share(self, share: float) -> None:
        self._share = max(share, MIN_SHARE)
        self._configure_bucket()

    def offer(self, delivery: Delivery) -> Spilled | None:
        if self._closed:
            return Spilled("lane closed")
        key = _key(delivery)
        queue = self.keys.get(key)
        if queue is None:
            self.keys[key] = deque([delivery])
            self._ready.append(key)
            self._pump()
        else:
            queue.append(delivery)
        return None

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _pump(self) -> None:
        while self._ready and self.in_flight < self.sub.max_in_flight and not self._closed:
            key = self._ready[0]
            queue = self.keys[key]
            while queue and queue[0].ticket.fenced:
                queue.popleft()
            if not queue:
                self._ready.popleft()
                del self.keys[key]
                continue
            if self.bucket is not None:
                wait = self.bucket.take()
                if wait > 0:
                    self.rate_waits += 1
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)
                    return
            self._ready.popleft()
            self.in_flight += 1
            task = asyncio.ensure_future(self._attempt(key, queue[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attempt(self, key: Hashable, delivery: Delivery) -> None:
        error: DeliveryError | None = None
        try:
            await self._send(delivery)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a sender bug must not wedge the key
            error = RetryableDelivery(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
        if self._closed:
            return  # ``close`` handed the delivery back: its caller settles it
        self._settle(key, delivery, error)
        error = None  # the traceback holds this frame: keep no cycle for the collector to find
        self._pump()

    def _settle(self, key: Hashable, delivery: Delivery, error: DeliveryError | None) -> None:
        settler = self._settler
        if delivery.ticket.fenced:
            self._next(key)
            return
        if error is None:
            settler.delivered(delivery)
        elif isinstance(error, NotAttempted):  # no connection slot in time: not an attempt, try again soon
            settler.counts.not_attempted()
            self._retry_later(key, NOT_ATTEMPTED_DELAY)
            return
        elif not settler.give_up(delivery, error):
            assert isinstance(error, RetryableDelivery)
            delay, reason = settler.next_delay(delivery, error)
            if delay is not None:
                settler.retried_in_place(delivery)
                self._retry_later(key, delay)
                return
            settler.dead_letter(delivery, reason, error.status)
        self._next(key)

    def _retry_later(self, key: Hashable, delay: float) -> None:
        def due() -> None:
            self._retry_timers.discard(handle)
            if not self._closed:
                self._ready.appendleft(key)
                self._pump()

        handle = asyncio.get_running_loop().call_later(delay, due)
        self._retry_timers.add(handle)

    def _next(self, key: Hashable) -> None:
        queue = self.keys[key]
        queue.popleft()
        if queue:
            self._ready.append(key)
        else:
            del self.keys[key]

    def expire(self, now: float) -> None:
        """Ordered deliveries never spill."""

    def close(self) -> list[Delivery]:
        """Stop; return every delivery not settled yet, those being sent included (the caller settles
        them; their attempts' outcomes are then ignored)."""
        self._closed = True
        for handle in (self._timer, *self._retry_timers):
            if handle is not None:
                handle.cancel()
        queued = [d for queue in self.keys.values() for d in queue]
        self.keys.clear()
        self._ready.clear()
        return queued


class KeyedLanes(LaneRegistry[KeyedLane]):
    """The lanes registry for one ordered subscription (same interface as ``Lanes``). It never holds
    fetching (``ready`` stays set): a failing key is bounded by its partition's ``max_uncommitted``."""

    def __init__(self, send: Send, settler: Settler) -> None:
        super().__init__()
        self._send = send
        self._settler = settler
        self.queued = 0

    def _new_lane(self, sub: Subscription, share: float) -> KeyedLane:
        return KeyedLane(sub, self._send, self._settler, share)

    def remove(self, sub_id: str) -> list[Delivery]:
        lane = self.by_id.pop(sub_id, None)
        return lane.close() if lane is not None else []

    def expire(self) -> None:
        now = time.monotonic()
        for lane in self.by_id.values():
            lane.expire(now)

    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.by_id.values())
