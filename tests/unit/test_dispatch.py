from __future__ import annotations

import asyncio
import time

from fanout.errors import DeliveryError
from fanout.model import Delivery
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.lanes import LaneLimits, Lanes
from fanout.pipeline.route import RoutingTable
from tests.unit.test_settle import Harness

TP = ("orders", 0)


def make_dispatcher(harness: Harness | None = None) -> Dispatcher:
    harness = harness or Harness()

    async def send(delivery: Delivery) -> DeliveryError | None:
        return None

    lanes = Lanes(send, harness.settler.done, LaneLimits(16, 2.0, 5, 30.0, 600.0))
    retry = [harness.settings.topics.retry(i) for i in range(3)]
    return Dispatcher(RoutingTable.build([]), lanes, harness.settler, retry)


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
