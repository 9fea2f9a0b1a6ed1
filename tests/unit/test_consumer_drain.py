"""Rebalances through the consumer thread into a real dispatcher, without a broker: a revoke drains
the partition's deliveries before it commits, a drain past its deadline commits only what settled, and
a partition lost and assigned again keeps its new tracker whatever its old drain does."""

from __future__ import annotations

import asyncio

from fanout.kafka.consumer import ConsumerHooks
from fanout.model.event import Delivery
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import LaneLimits
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub
from tests.unit.test_consumer_thread import GROUP, P0, P1, TP, Member, make_settings
from tests.unit.test_lanes import Gate
from tests.unit.test_settle import Harness, until


class Engine:
    """A consumer thread (on a fake consumer) feeding a dispatcher whose sends wait on a ``Gate``."""

    def __init__(self, drain_timeout: float = 30.0) -> None:
        self.harness = Harness()
        self.gate = Gate()
        lanes = Lanes(self.gate, self.harness.settler.done, LaneLimits(16, 60.0, 5, 30.0, 600.0))
        self.dispatcher = Dispatcher(RoutingTable.build([make_sub()]), lanes, self.harness.settler, [], GROUP)
        self.drains: list[dict[TP, int] | None] = []
        self.member = Member(
            self.dispatcher,
            make_settings(drain_timeout=drain_timeout),
            hooks=ConsumerHooks(assign=self.dispatcher.assign, drain=self._drain, fatal=print),
        )

    async def _drain(self, tps: dict[TP, int] | None, deadline: float) -> dict[TP, int]:
        self.drains.append(tps)
        return await self.dispatcher.drain(tps, deadline)

    def sending(self, tp: TP) -> list[Delivery]:
        return [d for d in self.gate.waiting if (d.event.topic, d.event.partition) == tp]

    def finish(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self.gate.finish(delivery)


async def test_a_revoke_waits_for_the_partitions_deliveries_then_commits_them() -> None:
    engine = Engine()
    member = engine.member
    member.produce(P0, 2)
    member.produce(P1, 1)
    await member.connect()
    await member.cycle_until(lambda: len(engine.gate.waiting) == 3)
    member.consumer.rebalance(revoke=[P0])
    cycling = asyncio.ensure_future(member.cycle())
    await until(lambda: engine.drains == [{P0: 1}])
    await asyncio.sleep(0.1)
    assert not cycling.done(), "the revoke blocks the consumer thread while P0 drains"
    engine.finish(engine.sending(P0))
    await asyncio.wait_for(cycling, 10)
    assert member.consumer.calls_of("commit") == [({P0: 2},)]
    assert member.broker.committed[P0] == 2
    assert list(engine.dispatcher.trackers) == [P1], "P1 was not drained"
    assert len(engine.sending(P1)) == 1, "and its delivery is still out"
    engine.finish(engine.sending(P1))
    await until(lambda: engine.dispatcher.committable() == {P1: 1})


async def test_a_drain_past_its_deadline_commits_only_what_settled_and_the_rest_is_read_again() -> None:
    engine = Engine(drain_timeout=0.2)
    member = engine.member
    member.produce(P0, 3)
    await member.connect()
    await member.cycle_until(lambda: len(engine.sending(P0)) == 3)
    first, stuck, third = engine.sending(P0)
    engine.finish([first, third])
    member.consumer.rebalance(revoke=[P0], assign=[P0])
    await member.cycle_until(lambda: member.thread.assigned == 2 and len(engine.sending(P0)) == 3)
    assert member.consumer.calls_of("commit") == [({P0: 1},)], "the lowest unsettled offset"
    again = [d for d in engine.sending(P0) if d is not stuck]
    assert [d.event.offset for d in again] == [1, 2], "read again under the new assignment"
    tracker = engine.dispatcher.trackers[P0]
    assert tracker.epoch == 2
    engine.finish([stuck])  # the old attempt answers late: its ticket is fenced
    await asyncio.sleep(0.05)
    assert tracker.committable() == 1
    engine.finish(again)
    await until(lambda: tracker.committable() == 3)


async def test_a_partition_lost_and_assigned_again_keeps_its_new_tracker() -> None:
    engine = Engine()
    member = engine.member
    member.produce(P0, 2)
    await member.connect()
    await member.cycle_until(lambda: len(engine.sending(P0)) == 2)
    old = engine.sending(P0)
    old_tracker = engine.dispatcher.trackers[P0]
    member.consumer.lose([P0])
    member.consumer.rebalance(assign=[P0])
    await member.cycle_until(lambda: len(engine.sending(P0)) == 4)
    await until(lambda: engine.drains == [{P0: 1}])
    await asyncio.sleep(0.05)  # the lost partition's drain has run on the loop
    tracker = engine.dispatcher.trackers[P0]
    assert tracker is not old_tracker and tracker.epoch == 2 and not tracker.closed
    assert old_tracker.closed
    engine.finish(old)
    await asyncio.sleep(0.05)
    assert tracker.committable() == 0, "the old epoch's settlements are fenced"
    engine.finish(engine.sending(P0))
    await until(lambda: engine.dispatcher.committable() == {P0: 2})
    offsets = engine.dispatcher.committable()
    member.store(offsets, {P0: tracker.epoch})
    member.store({P0: 1}, {P0: old_tracker.epoch})
    await member.cycle()
    assert member.consumer.calls_of("store") == [({P0: 2},)]
    assert member.consumer.calls_of("commit") == [], "lost: nothing committed for the old epoch"
