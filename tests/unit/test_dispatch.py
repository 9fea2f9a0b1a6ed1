from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fanout.model import headers as H
from fanout.model.errors import DeliveryError
from fanout.model.event import Delivery, Headers
from fanout.model.subscription import Subscription
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import LaneLimits
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub
from tests.unit.fakes.kafka import FakeMessage
from tests.unit.test_lanes import Gate
from tests.unit.test_settle import Harness, until

TP = ("orders", 0)


def make_dispatcher(
    harness: Harness | None = None,
    subs: list[Subscription] | None = None,
    group: str | None = None,
    sent: list[Delivery] | None = None,
) -> Dispatcher:
    harness = harness or Harness()

    async def send(delivery: Delivery) -> DeliveryError | None:
        if sent is not None:
            sent.append(delivery)
        return None

    lanes = Lanes(send, harness.settler.done, LaneLimits(16, 2.0, 5, 30.0, 600.0))
    retry = [harness.settings.topics.retry(i) for i in range(3)]
    return Dispatcher(RoutingTable.build(subs or []), lanes, harness.settler, retry, group)


@dataclass
class RetryRecord:
    """A record of the first retry tier, as the consumer hands it over."""

    offset_: int
    headers_: Headers

    def topic(self) -> str | None:
        return "fx.retry.0"

    def partition(self) -> int | None:
        return 0

    def offset(self) -> int | None:
        return self.offset_

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return b'{"event": "order.created", "data": {}}'

    def headers(self) -> Any:
        return self.headers_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_714_564_800_000)


def retry_headers(event_id: str, group: str | None) -> Headers:
    values: dict[str, str | int | None] = {
        H.SUBSCRIPTION: "hook-1",
        H.GROUP: group,
        H.ATTEMPT: 1,
        H.FIRST_ATTEMPT: int(time.time() * 1000),
        H.NOT_BEFORE: 0,
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: 0,
        H.ORIGIN_OFFSET: 5,
        H.EVENT_ID: event_id,
    }
    return H.encode(values)


async def test_a_group_delivers_its_own_retries_and_skips_other_groups() -> None:
    """Issue 13, defect 8: two groups on one topic prefix share the retry tiers; each must deliver only
    the retries it wrote (and the ones written before records named their group)."""
    harness = Harness()
    sent: list[Delivery] = []
    dispatcher = make_dispatcher(harness, [make_sub()], group="blue", sent=sent)
    dispatcher.assign([("fx.retry.0", 0)], 1)
    dispatcher.on_records(
        [
            RetryRecord(0, retry_headers("mine", "blue")),
            RetryRecord(1, retry_headers("theirs", "green")),
            RetryRecord(2, retry_headers("old", None)),
            RetryRecord(3, retry_headers("theirs-too", "blue-green")),
        ]
    )
    await until(lambda: dispatcher.committable() == {("fx.retry.0", 0): 4})
    assert sorted(d.event.id for d in sent) == ["mine", "old"]
    assert harness.counts.totals()["skipped_other_group"] == 2
    assert harness.counts.totals()["delivered"] == 2


async def test_a_drain_of_an_older_epoch_leaves_a_newer_tracker_alone() -> None:
    """A lost partition's drain runs on the loop after the consumer thread moved on: when the partition
    was assigned again meanwhile, the drain must not close (or pop) the new assignment's tracker."""
    dispatcher = make_dispatcher()
    dispatcher.assign([TP], 1)
    dispatcher.trackers[TP].track(10)
    dispatcher.assign([TP], 2)
    newer = dispatcher.trackers[TP]
    newer.track(20)
    assert await dispatcher.drain({TP: 1}, time.monotonic()) == {}
    assert dispatcher.trackers[TP] is newer and not newer.closed
    assert newer.committable() == 20


async def test_a_drain_waiting_on_its_epoch_ends_when_the_partition_is_assigned_again() -> None:
    dispatcher = make_dispatcher()
    dispatcher.assign([TP], 1)
    dispatcher.trackers[TP].track(10)
    drain = asyncio.create_task(dispatcher.drain({TP: 1}, time.monotonic() + 30))
    await asyncio.sleep(0)
    dispatcher.assign([TP], 2)
    newer = dispatcher.trackers[TP]
    assert await asyncio.wait_for(drain, 5) == {}, "a closed tracker has nothing to commit"
    assert dispatcher.trackers[TP] is newer and not newer.closed


async def test_a_drain_of_the_current_epoch_returns_its_offsets_and_closes_it() -> None:
    dispatcher = make_dispatcher()
    dispatcher.assign([TP], 3)
    tracker = dispatcher.trackers[TP]
    tracker.track(7).release()
    assert await dispatcher.drain({TP: 3}, time.monotonic() + 5) == {TP: 8}
    assert tracker.closed and TP not in dispatcher.trackers


async def test_draining_everything_takes_every_tracker() -> None:
    dispatcher = make_dispatcher()
    dispatcher.assign([TP, ("orders", 1)], 1)
    dispatcher.trackers[TP].track(1).release()
    assert await dispatcher.drain(None, time.monotonic()) == {TP: 2}
    assert dispatcher.trackers == {}


# -- routing, spills, retry records, fencing, backpressure ------------------------------------------

ORDER = b'{"event": "order.created", "data": {"id": 1}}'


def gated(
    subs: list[Subscription], harness: Harness | None = None, queue_size: int = 16, high_water: int = 1 << 62
) -> tuple[Dispatcher, Gate, Harness]:
    """A dispatcher whose sends wait until the test finishes them (``Gate``)."""
    harness = harness or Harness()
    gate = Gate()
    lanes = Lanes(gate, harness.settler.done, LaneLimits(queue_size, 60.0, 5, 30.0, 600.0), high_water)
    retry = [harness.settings.topics.retry(i) for i in range(3)]
    return Dispatcher(RoutingTable.build(subs), lanes, harness.settler, retry, "blue"), gate, harness


def source(offset: int, value: bytes | None = ORDER, topic: str = "orders") -> FakeMessage:
    return FakeMessage(topic, 0, offset, value, key=b"k")


async def test_a_record_goes_to_every_matching_lane_and_settles_when_all_are_sent() -> None:
    subs = [make_sub(id="a"), make_sub(id="b"), make_sub(id="c", topics=["payments"])]
    dispatcher, gate, _ = gated(subs)
    dispatcher.assign([TP], 1)
    dispatcher.on_records([source(0)])
    await until(lambda: len(gate.waiting) == 2)
    assert sorted(d.subscription.id for d in gate.waiting) == ["a", "b"]
    first, second = gate.waiting
    gate.finish(first)
    await asyncio.sleep(0.01)
    assert dispatcher.committable() == {TP: 0}, "one of its two deliveries is still out"
    gate.finish(second)
    await until(lambda: dispatcher.committable() == {TP: 1})


async def test_a_record_no_subscription_wants_settles_at_once() -> None:
    dispatcher, gate, harness = gated([make_sub(topics=["payments"])])
    dispatcher.assign([TP], 1)
    dispatcher.on_records([source(0), source(1)])
    assert dispatcher.committable() == {TP: 2}
    assert gate.calls == [] and harness.sink.records == []


async def test_a_delivery_the_lane_refuses_is_spilled_to_a_retry_tier_and_settles_on_the_ack() -> None:
    dispatcher, gate, harness = gated([make_sub(max_in_flight=1)], queue_size=1)
    dispatcher.assign([TP], 1)
    dispatcher.on_records([source(0), source(1), source(2)])  # one sent, one queued, one refused
    (spilled,) = harness.sink.records
    assert spilled.topic.startswith("fx.retry.")
    assert spilled.fanout[H.ORIGIN_OFFSET] == "2" and spilled.fanout[H.REASON] == "lane full"
    assert H.ATTEMPT not in spilled.fanout or spilled.fanout[H.ATTEMPT] == "0", "a spill is no attempt"
    for _ in range(2):
        await until(lambda: len(gate.waiting) == 1)
        gate.finish(gate.waiting[0])
    await until(lambda: dispatcher.committable() == {TP: 2})
    spilled.ack()
    await until(lambda: dispatcher.committable() == {TP: 3})


async def test_a_retry_record_turns_back_into_the_delivery_it_carries() -> None:
    dispatcher, gate, _ = gated([make_sub()])
    dispatcher.assign([("fx.retry.0", 0)], 1)
    headers = retry_headers("evt-42", "blue")
    dispatcher.on_records([RetryRecord(7, headers)])
    await until(lambda: len(gate.waiting) == 1)
    (delivery,) = gate.waiting
    assert delivery.event.id == "evt-42" and delivery.attempt == 1
    assert (delivery.event.topic, delivery.event.partition, delivery.event.offset) == ("orders", 0, 5)
    assert delivery.subscription.id == "hook-1"
    gate.finish(delivery)
    await until(lambda: dispatcher.committable() == {("fx.retry.0", 0): 8})


async def test_records_that_cannot_be_read_are_dead_lettered_and_the_offset_moves_on() -> None:
    dispatcher, gate, harness = gated([make_sub()])
    dispatcher.assign([TP, ("fx.retry.0", 0)], 1)
    broken = [(k, v) for k, v in retry_headers("evt-1", "blue") if k != H.ATTEMPT]
    dispatcher.on_records([source(0, value=b"not json"), RetryRecord(0, broken)])
    assert [r.topic for r in harness.sink.records] == ["fx.dlq", "fx.dlq"]
    assert all(r.fanout[H.REASON].startswith("poison record") for r in harness.sink.records)
    assert gate.calls == []
    assert dispatcher.committable() == {TP: 0, ("fx.retry.0", 0): 0}, "settled when the broker acks"
    harness.sink.ack_all()
    await until(lambda: dispatcher.committable() == {TP: 1, ("fx.retry.0", 0): 1})


async def test_a_retry_for_a_deleted_subscription_is_dropped() -> None:
    dispatcher, gate, harness = gated([make_sub(id="other")])
    dispatcher.assign([("fx.retry.0", 0)], 1)
    dispatcher.on_records([RetryRecord(3, retry_headers("evt-1", "blue"))])
    assert gate.calls == [] and harness.sink.records == []
    assert dispatcher.committable() == {("fx.retry.0", 0): 4}


async def test_a_disabled_subscription_gets_a_dead_letter_not_a_request() -> None:
    dispatcher, gate, harness = gated([make_sub(enabled=False)])
    dispatcher.assign([TP], 1)
    dispatcher.on_records([source(0)])
    (record,) = harness.sink.records
    assert record.topic == "fx.dlq" and record.fanout[H.REASON] == "subscription disabled"
    assert gate.calls == []


async def test_deliveries_queued_for_a_partition_assigned_again_are_fenced_and_never_sent() -> None:
    dispatcher, gate, harness = gated([make_sub(max_in_flight=1)])
    dispatcher.assign([TP], 1)
    dispatcher.on_records([source(0), source(1), source(2)])
    await until(lambda: len(gate.waiting) == 1)
    dispatcher.assign([TP], 2)  # revoked and assigned again: the old tracker is closed
    gate.finish(gate.waiting[0])
    await asyncio.sleep(0.05)
    assert len(gate.calls) == 1, "the queued deliveries of the old epoch were dropped"
    assert harness.sink.records == []
    assert dispatcher.committable() == {}, "the new tracker has tracked nothing yet"


async def test_submit_takes_a_whole_batch_then_refuses_while_the_lanes_hold_fetching() -> None:
    dispatcher, gate, _ = gated([make_sub(max_in_flight=1)], high_water=2)
    dispatcher.assign([TP], 1)
    assert dispatcher.ready is dispatcher.lanes.ready and dispatcher.ready.is_set()
    assert dispatcher.submit([source(0), source(1), source(2), source(3)])
    assert not dispatcher.ready.is_set(), "three queued behind one in flight: past high water"
    assert not dispatcher.submit([source(4)])
    assert dispatcher.trackers[TP].unsettled == 4, "a refused batch is not taken, not even tracked"
    for _ in range(3):
        await until(lambda: len(gate.waiting) == 1)
        gate.finish(gate.waiting[0])
    await until(dispatcher.ready.is_set)
    assert dispatcher.submit([source(4)])
    await until(lambda: len(gate.waiting) == 1)


async def test_a_retry_for_a_subscription_routed_elsewhere_is_delivered_from_the_addressable_table() -> None:
    """The shared group routes only unordered subscriptions, but a replay to a key-ordered one comes
    back through its retry tiers: it is delivered, not dropped as deleted; and swapping tables keeps
    that subscription's lane while it stays addressable."""
    harness = Harness()
    sent: list[Delivery] = []
    ordered = make_sub(ordering="key")
    dispatcher = make_dispatcher(harness, [], sent=sent)
    dispatcher.set_table(RoutingTable.build([]), addressable=RoutingTable.build([ordered]))
    dispatcher.assign([("fx.retry.0", 0)], 1)
    dispatcher.on_records([RetryRecord(0, retry_headers("replayed", None))])
    await until(lambda: dispatcher.committable() == {("fx.retry.0", 0): 1})
    assert [d.event.id for d in sent] == ["replayed"] and not harness.counts.outcomes[(ordered.id, "dropped")]
    assert ordered.id in dispatcher.lanes.by_id
    dispatcher.set_table(RoutingTable.build([]), addressable=RoutingTable.build([ordered]))
    assert ordered.id in dispatcher.lanes.by_id, "still addressable: its lane stays"
    dispatcher.set_table(RoutingTable.build([]))
    assert ordered.id not in dispatcher.lanes.by_id, "deleted: its lane goes"
    dispatcher.on_records([RetryRecord(1, retry_headers("late", None))])
    assert harness.counts.outcomes[(ordered.id, "dropped")] == 1 and [d.event.id for d in sent] == [
        "replayed"
    ]
    assert dispatcher.committable() == {("fx.retry.0", 0): 2}
