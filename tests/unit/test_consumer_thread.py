"""The consumer thread against an in-memory consumer (tests/unit/fakes/kafka.py): batches, the
uncommitted window, the retry gate, holds, refused batches, rebalances, pauses and commits.

Each test drives the thread's cycles one at a time from a worker thread (``asyncio.to_thread``), as the
real thread would run them, so the event loop stays free for hand-overs and drains."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from fanout.config import DispatcherSettings, KafkaSettings, Settings
from fanout.kafka import consumer as consumer_module
from fanout.kafka.consumer import ConsumerHooks, ConsumerThread
from fanout.model import headers as H
from fanout.model.errors import FatalKafkaError
from fanout.model.ownership import Ownership
from tests.unit.fakes.kafka import FakeBroker, FakeConsumer, FakeMessage

TP = tuple[str, int]
P0, P1 = ("orders", 0), ("orders", 1)
R0, R1 = ("fx.retry.0", 0), ("fx.retry.0", 1)
GROUP = "fanout"


class Target:
    """A BatchTarget that records what it takes and refuses batches while not ready (or when told to)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.ready.set()
        self.batches: list[list[FakeMessage]] = []
        self.refusals = 0
        self.refuse_next = False

    def submit(self, batch: Sequence[FakeMessage]) -> bool:
        if self.refuse_next:  # at capacity by the time the batch arrived
            self.refuse_next = False
            self.ready.clear()
        if not self.ready.is_set():
            self.refusals += 1
            return False
        self.batches.append(list(batch))
        return True

    def taken(self, tp: TP | None = None) -> list[tuple[str, int, int]]:
        return [
            (m.topic(), m.partition(), m.offset())
            for batch in self.batches
            for m in batch
            if tp is None or (m.topic(), m.partition()) == tp
        ]

    def offsets(self, tp: TP) -> list[int]:
        return [o for _, _, o in self.taken(tp)]


def make_settings(**dispatcher: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
        dispatcher=DispatcherSettings(group_id=GROUP, **dispatcher),
    )


class Member:
    """A consumer thread on a fake consumer, with recording hooks (or a dispatcher's)."""

    def __init__(
        self,
        target: Any,
        settings: Settings | None = None,
        topics: Iterable[str] = ("orders",),
        retry_topics: Iterable[str] = (),
        partitions: int = 2,
        hooks: ConsumerHooks | None = None,
    ) -> None:
        self.broker = FakeBroker()
        for topic in (*topics, *retry_topics):
            self.broker.create(topic, partitions)
        self.settings = settings or make_settings()
        self.assigned: list[tuple[list[TP], int]] = []
        self.drains: list[dict[TP, int] | None] = []
        self.drain_offsets: dict[TP, int] = {}
        self.ownerships: list[Ownership] = []
        self.fatals: list[FatalKafkaError] = []
        self.fake: FakeConsumer | None = None
        self.thread = ConsumerThread(
            self.settings,
            topics,
            retry_topics,
            asyncio.get_running_loop(),
            target,
            hooks
            or ConsumerHooks(
                assign=lambda tps, epoch: self.assigned.append((tps, epoch)),
                drain=self._drain,
                fatal=self.fatals.append,
                assignment_changed=self.ownerships.append,
            ),
            group_id=GROUP,
            client=self._client,
        )

    def _client(self, config: dict[str, Any]) -> FakeConsumer:
        self.fake = FakeConsumer(self.broker, config)
        return self.fake

    async def _drain(self, tps: dict[TP, int] | None, deadline: float) -> dict[TP, int]:
        self.drains.append(tps)
        return {tp: o for tp, o in self.drain_offsets.items() if tps is None or tp in tps}

    @property
    def consumer(self) -> FakeConsumer:
        assert self.fake is not None
        return self.fake

    async def connect(self) -> None:
        await asyncio.to_thread(self.thread.connect)

    async def cycle(self, n: int = 1) -> None:
        for _ in range(n):
            await asyncio.to_thread(self.thread.cycle, self.consumer)

    async def cycle_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached before the deadline"
            await self.cycle()

    def produce(self, tp: TP, n: int, headers: list[tuple[str, bytes]] | None = None) -> list[int]:
        return [
            self.broker.produce(tp[0], tp[1], b'{"event":"order.created","data":{}}', headers)
            for _ in range(n)
        ]

    def store(self, offsets: dict[TP, int], epochs: dict[TP, int]) -> None:
        self.thread.store(offsets, epochs)


def retry_headers(due_ms: int, group: str = GROUP) -> list[tuple[str, bytes]]:
    values: dict[str, str | int | None] = {H.SUBSCRIPTION: "hook-1", H.GROUP: group, H.NOT_BEFORE: due_ms}
    return [(k, v) for k, v in H.encode(values) if v is not None]


# -- batches -------------------------------------------------------------------------------------------


async def test_records_are_submitted_in_order_and_ownership_is_announced_after_consume() -> None:
    target = Target()
    member = Member(target)
    member.produce(P0, 5)
    member.produce(P1, 3)
    await member.connect()
    await member.cycle_until(lambda: len(target.taken()) == 8)
    assert member.assigned == [([P0, P1], 1)]
    assert target.offsets(P0) == [0, 1, 2, 3, 4] and target.offsets(P1) == [0, 1, 2]
    # list_topics is refused inside a callback (the fake's call state): the announce came after consume().
    assert member.ownerships == [Ownership({"orders": 2}, {"orders": 2})]
    assert member.thread.assigned == 2 and member.thread.joined.is_set()


async def test_a_batch_waits_for_the_loop_to_take_the_previous_one() -> None:
    target = Target()
    member = Member(target)
    member.produce(P0, 3)
    await member.connect()
    await member.cycle_until(lambda: len(target.batches) == 1)
    member.thread._handover._handed += 1  # a batch out that the loop has not taken
    member.produce(P0, 2)
    await member.cycle(3)
    assert len(target.batches) == 1, "nothing fetched ahead of the loop"
    member.thread._handover._processed += 1
    await member.cycle_until(lambda: target.offsets(P0) == [0, 1, 2, 3, 4])


# -- the uncommitted window ----------------------------------------------------------------------------


async def test_a_partition_stops_at_max_uncommitted_and_resumes_when_commits_bring_it_to_half() -> None:
    target = Target()
    member = Member(target, make_settings(max_uncommitted=4), partitions=1)
    member.produce(P0, 10)
    await member.connect()
    await member.cycle_until(lambda: P0 in member.consumer.paused)
    await member.cycle(3)
    assert target.offsets(P0) == [0, 1, 2, 3], "exactly max_uncommitted handed over"
    assert (P0, 4) in member.consumer.calls_of("seek"), "rewound to the first record not handed over"
    member.store({P0: 1}, {P0: 1})
    await member.cycle()
    member.consumer.auto_commit()
    await member.cycle(3)
    assert P0 in member.consumer.paused, "3 of 4 uncommitted: above half, still paused"
    member.store({P0: 2}, {P0: 1})
    await member.cycle()
    member.consumer.auto_commit()
    await member.cycle_until(lambda: target.offsets(P0)[-1:] == [5])
    assert target.offsets(P0) == [0, 1, 2, 3, 4, 5], "from offset 2, four records: up to 5"
    assert ([P0],) in member.consumer.calls_of("resume")


async def test_a_store_from_an_older_epoch_is_ignored() -> None:
    target = Target()
    member = Member(target, partitions=1)
    member.produce(P0, 3)
    await member.connect()
    await member.cycle_until(lambda: len(target.taken()) == 3)
    member.drain_offsets = {P0: 1}
    member.consumer.rebalance(revoke=[P0], assign=[P0])
    await member.cycle_until(lambda: len(member.assigned) == 2)
    assert member.assigned[-1] == ([P0], 2)
    assert member.consumer.calls_of("commit") == [({P0: 1},)], "the revoke drained, then committed"
    member.store({P0: 3}, {P0: 1})  # computed by the loop for the revoked assignment
    await member.cycle()
    assert member.consumer.calls_of("store") == [({P0: 1},)], "only the revoke's own store"
    member.store({P0: 2}, {P0: 2})
    await member.cycle()
    assert member.consumer.calls_of("store")[-1] == ({P0: 2},)


# -- the retry gate ------------------------------------------------------------------------------------


async def test_retry_records_not_due_are_held_and_handed_over_in_order_when_due() -> None:
    target = Target()
    member = Member(target, topics=(), retry_topics=("fx.retry.0",), partitions=1)
    await member.connect()  # a new group starts the tiers at their end: here, 0
    due = int(time.time() * 1000) + 400
    member.produce(R0, 2, retry_headers(due))
    member.produce(R0, 1, retry_headers(due, group="another-group"))
    member.produce(R0, 1, retry_headers(0))
    await member.cycle_until(lambda: member.thread.held_back_count() == 4)
    assert target.taken() == []
    await member.cycle_until(lambda: len(target.taken()) == 4)
    assert time.time() * 1000 >= due
    assert target.offsets(R0) == [0, 1, 2, 3], "held in order, the due ones behind the first too"


async def test_another_groups_retry_records_are_handed_over_at_once() -> None:
    target = Target()
    member = Member(target, topics=(), retry_topics=("fx.retry.0",), partitions=1)
    await member.connect()
    member.produce(R0, 2, retry_headers(int(time.time() * 1000) + 60_000, group="another-group"))
    await member.cycle_until(lambda: len(target.taken()) == 2)
    assert member.thread.held_back_count() == 0


async def test_past_the_budget_partitions_pause_and_what_they_did_not_hold_is_fetched_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "HELD_BACK_BUDGET", 3)
    target = Target()
    member = Member(target, topics=(), retry_topics=("fx.retry.0",), partitions=2)
    await member.connect()
    due = int(time.time() * 1000) + 600
    member.produce(R0, 6, retry_headers(due))
    member.produce(R1, 6, retry_headers(due))
    peak = 0
    while len(target.taken()) < 12:
        await member.cycle()
        peak = max(peak, member.thread.held_back_count())
        assert member.thread.held_back_count() <= 3 + 2, "the budget, plus one record per partition"
        if time.time() * 1000 < due - 100:
            assert target.taken() == []
    assert peak >= 3
    assert member.consumer.calls_of("seek"), "records past the budget were fetched again"
    assert target.offsets(R0) == list(range(6)) and target.offsets(R1) == list(range(6))


# -- holds and refusals --------------------------------------------------------------------------------


async def test_a_short_hold_fetches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "HOLD_WITHOUT_PAUSE", 60.0)
    target = Target()
    member = Member(target, partitions=1)
    await member.connect()
    await member.cycle()  # joined and assigned
    member.produce(P0, 3)
    target.ready.clear()
    calls = len(member.consumer.calls)
    await member.cycle(5)
    assert target.taken() == [] and target.refusals == 0, "nothing fetched, nothing submitted"
    assert len(member.consumer.calls) == calls, "and no pause: librdkafka keeps its prefetched records"
    target.ready.set()
    await member.cycle_until(lambda: target.offsets(P0) == [0, 1, 2])


async def test_a_long_hold_pauses_every_partition_and_still_serves_a_rebalance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pause held across a rebalance: a partition assigned during a long hold is paused too, and
    every partition resumes when the dispatcher is ready again."""
    monkeypatch.setattr(consumer_module, "HOLD_WITHOUT_PAUSE", 0.0)
    target = Target()
    member = Member(target, partitions=3)
    await member.connect()
    member.consumer.rebalance(revoke=[("orders", 2)])  # this member starts with two of three
    await member.cycle_until(lambda: member.thread.assigned == 2)
    target.ready.clear()
    await member.cycle()
    assert member.consumer.paused == {P0, P1}
    member.produce(P0, 2)
    member.produce(("orders", 2), 2)
    member.consumer.rebalance(assign=[("orders", 2)])
    await member.cycle_until(lambda: member.thread.assigned == 3)
    await member.cycle()
    assert member.consumer.paused == {P0, P1, ("orders", 2)}, "the new partition is held too"
    assert target.taken() == []
    target.ready.set()
    await member.cycle_until(lambda: len(target.taken()) == 4)
    assert member.consumer.paused == set()


async def test_a_refused_batch_is_submitted_again_first_and_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "HOLD_WITHOUT_PAUSE", 0.0)
    target = Target()
    member = Member(target, partitions=1)
    member.produce(P0, 3)
    await member.connect()
    target.refuse_next = True
    await member.cycle_until(lambda: target.refusals == 1)
    member.produce(P0, 3)
    await member.cycle(5)
    assert target.taken() == [] and target.refusals == 1, "nothing submitted while not ready"
    target.ready.set()
    await member.cycle_until(lambda: len(target.taken()) == 6)
    assert target.offsets(P0) == [0, 1, 2, 3, 4, 5]
    assert target.batches[0] and [m.offset() for m in target.batches[0]] == [0, 1, 2]


async def test_a_refused_batch_loses_the_records_of_a_partition_revoked_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "HOLD_WITHOUT_PAUSE", 0.0)
    target = Target()
    member = Member(target, partitions=2)
    await member.connect()
    await member.cycle()  # assigned
    member.produce(P0, 2)
    member.produce(P1, 2)
    target.refuse_next = True
    await member.cycle_until(lambda: target.refusals == 1)
    assert len(member.thread._handover.pending or []) == 4
    member.consumer.rebalance(revoke=[P0])
    await member.cycle_until(lambda: member.thread.assigned == 1)
    assert member.drains == [{P0: 1}]
    target.ready.set()
    await member.cycle_until(lambda: len(target.batches) == 1)
    await member.cycle(2)
    assert target.taken() == [("orders", 1, 0), ("orders", 1, 1)], "P0's are its next owner's to read"


# -- rebalances ----------------------------------------------------------------------------------------


async def test_a_partition_revoked_while_paused_resumes_when_it_comes_back() -> None:
    """Issue 13, defect 1, without a broker: librdkafka (and the fake) keep the pause flag across an
    incremental unassign/assign; the thread must resume the partition explicitly."""
    target = Target()
    member = Member(target, make_settings(max_uncommitted=2), partitions=1)
    member.produce(P0, 6)
    await member.connect()
    await member.cycle_until(lambda: P0 in member.consumer.paused)
    assert target.offsets(P0) == [0, 1]
    member.drain_offsets = {P0: 2}
    member.consumer.rebalance(revoke=[P0])
    await member.cycle_until(lambda: member.thread.assigned == 0)
    member.consumer.rebalance(assign=[P0])
    await member.cycle_until(lambda: member.thread.assigned == 1)
    assert P0 in member.consumer.paused, "the fake kept the flag, as librdkafka does"
    await member.cycle_until(lambda: target.offsets(P0)[-1:] == [3])
    assert target.offsets(P0) == [0, 1, 2, 3], "re-read from the committed offset, under a new window"


async def test_lost_partitions_are_not_committed_and_their_drain_is_not_awaited() -> None:
    target = Target()
    member = Member(target, partitions=2)
    member.produce(P0, 2)
    await member.connect()
    await member.cycle_until(lambda: len(target.taken()) == 2)
    member.drain_offsets = {P0: 2}
    member.consumer.lose([P0])
    await member.cycle_until(lambda: member.thread.assigned == 1)
    await asyncio.sleep(0)
    assert member.drains == [{P0: 1}]
    assert member.consumer.calls_of("commit") == [], "a lost partition is no longer ours to commit"


async def test_shutdown_drains_everything_commits_and_leaves() -> None:
    target = Target()
    member = Member(target)
    member.produce(P0, 2)
    member.produce(P1, 1)
    await member.connect()
    await member.cycle_until(lambda: len(target.taken()) == 3)
    member.drain_offsets = {P0: 2, P1: 1}
    await asyncio.to_thread(member.thread.shutdown, member.consumer)
    assert member.drains == [None]
    assert member.consumer.calls_of("pause")[-1] == ([P0, P1],)
    assert member.consumer.calls_of("commit") == [({P0: 2, P1: 1},)]
    assert member.broker.committed == {P0: 2, P1: 1}


async def test_the_thread_runs_until_stopped_and_resolves_finished() -> None:
    target = Target()
    member = Member(target)
    member.produce(P0, 2)
    member.thread.start()
    deadline = time.monotonic() + 10
    while len(target.taken()) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    member.thread.stop()
    await asyncio.wait_for(member.thread.finished, 10)
    assert member.consumer.closed and member.fatals == []


async def test_a_fatal_error_from_consume_stops_the_thread() -> None:
    from confluent_kafka import KafkaError

    target = Target()
    member = Member(target, partitions=1)
    await member.connect()
    await member.cycle()
    member.consumer.assigned[P0].fetched.append(
        FakeMessage("orders", 0, 0, None, error=KafkaError(KafkaError._FATAL, "fenced"))
    )
    with pytest.raises(FatalKafkaError, match="fenced"):
        await member.cycle()
