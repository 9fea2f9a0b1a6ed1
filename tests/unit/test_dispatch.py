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
    assert harness.settler.stats["skipped_other_group"] == 2
    assert harness.settler.stats["delivered"] == 2


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
