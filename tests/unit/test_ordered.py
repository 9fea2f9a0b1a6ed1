"""Key-ordered lanes: one delivery at a time per key, in offset order; failures retry in place and hold
back only their own key; nothing is ever spilled."""

from __future__ import annotations

import asyncio

import pytest

from fanout.model.errors import NotAttempted, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery, Event
from fanout.model.subscription import Subscription
from fanout.pipeline import ordered as ordered_module
from fanout.pipeline.offsets import PartitionTracker
from fanout.pipeline.ordered import KeyedLanes
from tests.unit.factories import make_delivery, make_sub
from tests.unit.test_lanes import Gate
from tests.unit.test_settle import DLQ, RETRY, Harness, make_settings, until


def keyed(sub: Subscription, tracker: PartitionTracker, offset: int, key: bytes | None) -> Delivery:
    event = Event(
        id=f"evt-{offset}",
        type="order.created",
        topic="orders",
        partition=0,
        offset=offset,
        key=key,
        time=1_700_000_000.0,
        value=b'{"event":"order.created","data":{}}',
        headers=[],
        attributes={},
    )
    return make_delivery(sub, event, tracker.track(offset), first_attempt=0.0)


class Ordered:
    def __init__(self, max_in_flight: int = 8, **retry: object) -> None:
        self.harness = Harness(make_settings(**retry)) if retry else Harness()
        self.gate = Gate()
        self.lanes = KeyedLanes(self.gate, self.harness.settler)
        self.sub = make_sub(max_in_flight=max_in_flight, ordering="key")
        self.lane = self.lanes.get(self.sub)
        self.tracker = PartitionTracker("orders", 0, epoch=1)
        self._offset = 0

    def offer(self, *keys: bytes | None) -> list[Delivery]:
        out = []
        for key in keys:
            delivery = keyed(self.sub, self.tracker, self._offset, key)
            self._offset += 1
            assert self.lane.offer(delivery) is None, "an ordered lane never refuses"
            out.append(delivery)
        return out

    def sending(self) -> list[int]:
        return sorted(d.event.offset for d in self.gate.waiting)


async def test_each_key_is_delivered_one_at_a_time_in_offset_order_and_keys_in_parallel() -> None:
    o = Ordered()
    a0, a1, b0, a2 = o.offer(b"a", b"a", b"b", b"a")
    await until(lambda: o.sending() == [0, 2])
    o.gate.finish(a0)
    await until(lambda: o.sending() == [1, 2])
    o.gate.finish(b0)
    o.gate.finish(a1)
    await until(lambda: o.sending() == [3])
    o.gate.finish(a2)
    await until(lambda: o.tracker.committable() == 4)
    assert [d.event.offset for d in o.gate.calls] == [0, 2, 1, 3]
    assert o.lanes.ready.is_set(), "ordered lanes never hold fetching"


async def test_records_without_a_key_are_not_held_behind_each_other() -> None:
    o = Ordered()
    o.offer(None, None, None)
    await until(lambda: o.sending() == [0, 1, 2])


async def test_at_most_max_in_flight_keys_are_out_at_once() -> None:
    o = Ordered(max_in_flight=2)
    first, second, third = o.offer(b"a", b"b", b"c")
    await until(lambda: o.sending() == [0, 1])
    await asyncio.sleep(0.01)
    assert o.sending() == [0, 1]
    o.gate.finish(first)
    await until(lambda: o.sending() == [1, 2])
    o.gate.finish(second)
    o.gate.finish(third)


async def test_a_failing_delivery_retries_in_place_and_holds_back_only_its_key() -> None:
    o = Ordered(schedule=[0.05, 0.05], tiers=[1, 5])
    a0, a1, b0, b1 = o.offer(b"a", b"a", b"b", b"b")
    await until(lambda: o.sending() == [0, 2])
    o.gate.finish(a0, RetryableDelivery("HTTP 503", 503))
    o.gate.finish(b0)
    await until(lambda: o.sending() == [0, 3] and len(o.gate.calls) == 4)
    assert o.gate.calls[-2:] == [b1, a0] or o.gate.calls[-2:] == [a0, b1]
    assert a0.attempt == 1, "the failed attempt counted"
    assert o.harness.sink.to(*RETRY) == [], "retried in place, not through a retry topic"
    o.gate.finish(b1)
    o.gate.finish(a0)
    await until(lambda: o.sending() == [1])
    o.gate.finish(a1)
    await until(lambda: o.tracker.committable() == 4)


async def test_a_key_whose_retries_run_out_is_dead_lettered_and_moves_on() -> None:
    o = Ordered(schedule=[0.01], tiers=[1])
    a0, a1 = o.offer(b"a", b"a")
    for _ in range(2):
        await until(lambda: o.sending() == [0])
        o.gate.finish(a0, RetryableDelivery("HTTP 500", 500))
    await until(lambda: o.sending() == [1])
    (dead,) = o.harness.sink.to(DLQ)
    assert dead.fanout["fanout-reason"] == "retries exhausted"
    o.gate.finish(a1)
    dead.ack()
    await until(lambda: o.tracker.committable() == 2)


async def test_a_permanent_failure_is_dead_lettered_at_once() -> None:
    o = Ordered()
    a0, a1 = o.offer(b"a", b"a")
    await until(lambda: o.sending() == [0])
    o.gate.finish(a0, PermanentDelivery("HTTP 400", 400))
    await until(lambda: o.sending() == [1])
    (dead,) = o.harness.sink.to(DLQ)
    assert dead.fanout["fanout-reason"] == "permanent failure: HTTP 400"
    o.gate.finish(a1)


async def test_no_connection_slot_is_tried_again_soon_and_is_not_an_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ordered_module, "NOT_ATTEMPTED_DELAY", 0.01)
    o = Ordered()
    (a0,) = o.offer(b"a")
    await until(lambda: o.sending() == [0])
    o.gate.finish(a0, NotAttempted("pool timeout"))
    await until(lambda: o.sending() == [0] and len(o.gate.calls) == 2)
    assert a0.attempt == 0
    o.gate.finish(a0)
    await until(lambda: o.tracker.committable() == 1)


async def test_deliveries_of_a_revoked_partition_are_dropped_and_the_key_moves_on() -> None:
    o = Ordered()
    a0, _ = o.offer(b"a", b"a")
    await until(lambda: o.sending() == [0])
    o.tracker.close()  # the partition was revoked: its tickets are fenced
    o.gate.finish(a0, RetryableDelivery("HTTP 503", 503))
    await asyncio.sleep(0.02)
    assert len(o.gate.calls) == 1, "neither the fenced retry nor the queued delivery was sent"
    assert o.harness.sink.records == [] and not o.lane.keys


async def test_a_closed_lane_refuses_and_returns_what_it_queued() -> None:
    o = Ordered(max_in_flight=1)
    a0, *_ = o.offer(b"a", b"a", b"b")
    await until(lambda: o.sending() == [0])
    queued = o.lane.close()
    assert sorted(d.event.offset for d in queued) == [0, 1, 2]
    refused = o.lane.offer(keyed(o.sub, o.tracker, 9, b"c"))
    assert refused is not None and refused.error == "lane closed"
    o.gate.finish(a0)
    await until(lambda: not o.gate.waiting)
    await asyncio.sleep(0.01)
    assert a0.ticket.pending == 1, "handed back by close: its outcome is the caller's, not settled twice"
    assert o.harness.sink.records == []
