"""The consumer thread's pure policies: the uncommitted window, the retry-tier gate, the hold clock and
the rebalance bookkeeping (the pause book has its own tests, test_pauses.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.kafka.assignment import Assignment
from fanout.kafka.pauses import Hold, Holding
from fanout.kafka.retry_gate import RetryGate
from fanout.kafka.window import UncommittedWindow

A = ("fx.retry.0", 0)
B = ("fx.retry.0", 1)


# -- the uncommitted window --------------------------------------------------------------------------


def test_the_window_hands_over_exactly_max_uncommitted_then_refuses() -> None:
    window = UncommittedWindow(3)
    assert [window.admit(o) for o in (10, 11, 12, 13)] == [True, True, True, False]
    assert window.committed == 10, "the first record read stands for the committed offset"
    assert window.last == 12 and window.backpressured and window.pressed()


def test_the_window_resumes_only_at_half_after_being_full() -> None:
    window = UncommittedWindow(4)
    for offset in range(4):
        assert window.admit(offset)
    assert window.pressed()
    window.commit(1)  # 3 uncommitted: still over half
    assert window.pressed()
    window.commit(2)  # 2 uncommitted: down to half
    assert not window.pressed()
    assert window.admit(4)
    assert not window.pressed(), "between half and full it stays as it was"
    assert window.admit(5) and window.pressed()
    window.commit(6)
    assert [window.admit(o) for o in range(6, 11)] == [True] * 4 + [False]


@settings(max_examples=300)
@given(
    limit=st.integers(1, 8),
    steps=st.lists(st.tuples(st.sampled_from(["read", "commit", "check"]), st.integers(0, 5)), max_size=80),
)
def test_the_window_never_hands_over_past_max_uncommitted(limit: int, steps: list[tuple[str, int]]) -> None:
    """Whatever the order of reads and commits, the records handed over and not committed never exceed
    the limit, none is skipped (a refused record is the next one read again), and a window that is full
    is always backpressured."""
    window = UncommittedWindow(limit)
    next_read, handed = 100, []
    for action, n in steps:
        if action == "read":
            if window.admit(next_read):
                handed.append(next_read)
                next_read += 1
        elif action == "commit" and handed:
            committed = window.committed or 100
            window.commit(min(handed[-1] + 1, committed + n))  # commits move forward, never past the reads
        size = 0 if window.last is None else window.last + 1 - (window.committed or 0)
        assert size <= limit
        if action == "check":
            pressed = window.pressed()
            assert pressed or size < limit
    assert handed == list(range(100, next_read))


# -- the retry-tier gate ------------------------------------------------------------------------------


def test_a_partitions_first_record_not_due_is_held_past_the_budget() -> None:
    gate: RetryGate[str] = RetryGate(budget=1)
    gate.gate(A, 0, 5_000, "a0")
    assert gate.over_budget()
    gate.gate(B, 0, 6_000, "b0")
    assert gate.count == 2 and gate.holds(B), "a partition always holds the record that gates it"
    assert not gate.queue_behind(A, 1, None, "a1"), "behind it, the budget applies"
    assert gate.held(A) == 1


def test_due_records_are_released_in_order_up_to_the_first_not_due() -> None:
    gate: RetryGate[str] = RetryGate(budget=10)
    gate.gate(A, 0, 1_000, "a0")
    assert gate.queue_behind(A, 1, 1_000, "a1")
    assert gate.queue_behind(A, 2, 3_000, "a2")
    assert gate.queue_behind(A, 3, None, "a3")
    assert gate.next_due_ms() == 1_000
    assert gate.release(999, lambda tp, o: True) == []
    assert gate.release(1_000, lambda tp, o: True) == ["a0", "a1"]
    assert gate.next_due_ms() == 3_000 and gate.count == 2
    assert gate.release(3_000, lambda tp, o: True) == ["a2", "a3"]
    assert not gate.holding and gate.count == 0 and gate.next_due_ms() is None


def test_release_stops_where_the_window_refuses() -> None:
    gate: RetryGate[str] = RetryGate(budget=10)
    gate.gate(A, 0, 1, "a0")
    gate.queue_behind(A, 1, 1, "a1")
    gate.gate(B, 0, 1, "b0")
    assert gate.release(5, lambda tp, offset: tp == B or offset < 1) == ["a0", "b0"]
    assert gate.held(A) == 1 and not gate.holds(B)


def test_dropping_a_partition_forgets_what_it_held() -> None:
    gate: RetryGate[str] = RetryGate(budget=10)
    gate.gate(A, 0, 1, "a0")
    gate.queue_behind(A, 1, 1, "a1")
    gate.gate(B, 0, 1, "b0")
    gate.drop([A, ("other", 0)])
    assert gate.count == 1 and not gate.holds(A)
    assert gate.release(5, lambda tp, o: True) == ["b0"]


@settings(max_examples=300)
@given(budget=st.integers(1, 6), partitions=st.integers(1, 3), data=st.data())
def test_the_gate_hands_every_record_over_once_in_order_within_its_budget(
    budget: int, partitions: int, data: st.DataObject
) -> None:
    """The consumer thread's use of the gate, modelled: a record of a partition that holds is queued
    behind, or fetched again later; a record not due gates its partition; any other passes. However
    fetches, releases and the clock interleave, each partition's records are handed over exactly once,
    in offset order, none before it is due, and the gate holds at most the budget plus one record per
    partition."""
    gate: RetryGate[tuple[int, int]] = RetryGate(budget)
    tps = [("fx.retry.0", p) for p in range(partitions)]
    next_offset = dict.fromkeys(tps, 0)
    handed: dict[tuple[str, int], list[int]] = {tp: [] for tp in tps}
    dues: dict[tuple[tuple[str, int], int], int | None] = {}
    now = 0
    for _ in range(data.draw(st.integers(1, 80))):
        action = data.draw(st.sampled_from(["fetch", "fetch", "release", "tick"]))
        if action == "fetch":
            tp = data.draw(st.sampled_from(tps))
            offset = next_offset[tp]
            if (tp, offset) not in dues:
                dues[(tp, offset)] = data.draw(st.one_of(st.none(), st.integers(now - 5, now + 30)))
            due = dues[(tp, offset)]
            if gate.holds(tp):
                if gate.queue_behind(tp, offset, due, (tp[1], offset)):
                    next_offset[tp] += 1
            elif due is not None and due > now:
                gate.gate(tp, offset, due, (tp[1], offset))
                next_offset[tp] += 1
            else:
                handed[tp].append(offset)
                next_offset[tp] += 1
        elif action == "release":
            every = data.draw(st.sampled_from([1, 3]))  # 3: the window refuses every third offset
            for p, offset in gate.release(now, lambda tp, offset, every=every: (offset + 1) % every != 0):
                due = dues[(tps[p], offset)]
                assert due is None or due <= now
                handed[tps[p]].append(offset)
        else:
            now += data.draw(st.integers(0, 10))
        assert gate.count <= budget + partitions
        assert gate.count == sum(gate.held(tp) for tp in tps)
    for p, offset in gate.release(now + 1_000, lambda tp, offset: True):
        handed[tps[p]].append(offset)
    assert gate.count == 0
    for tp in tps:
        assert handed[tp] == list(range(next_offset[tp]))


# -- holding ------------------------------------------------------------------------------------------


def test_a_short_hold_skips_consume_and_a_long_one_pauses() -> None:
    hold = Hold(without_pause=1.0)
    assert hold.update(False, 10.0) is Holding.NO
    assert hold.update(True, 10.0) is Holding.SHORT
    assert hold.update(True, 10.9) is Holding.SHORT
    assert hold.update(True, 11.0) is Holding.LONG
    assert hold.update(False, 11.5) is Holding.NO
    assert hold.update(True, 12.0) is Holding.SHORT, "a new hold starts short again"


# -- rebalance bookkeeping ----------------------------------------------------------------------------


def test_each_assignment_gets_a_new_epoch_and_a_fresh_window() -> None:
    book = Assignment(max_uncommitted=5)
    assert book.assign([A, B]) == 1 and book.changed
    book.parts[A].window.admit(7)
    book.changed = False
    assert book.remove([A]) == {A: 1} and book.changed
    assert book.assign([A]) == 2
    assert book.owned([A, B, ("x", 0)]) == {A: 2, B: 1}
    assert book.parts[A].window.last is None, "the new assignment starts its own window"
    assert book.partitions_by_topic() == {"fx.retry.0": 2}


def test_a_store_computed_for_an_older_epoch_is_not_current() -> None:
    book = Assignment(max_uncommitted=5)
    book.assign([A])
    book.remove([A])
    book.assign([A, B])
    offsets = {A: 10, B: 4, ("gone", 0): 1}
    assert book.current(offsets, {A: 1, B: 2, ("gone", 0): 1}) == [(B, 4)]
    assert book.current(offsets, {A: 2, B: 2}) == [(A, 10), (B, 4)]


def test_removing_what_is_not_owned_changes_nothing() -> None:
    book = Assignment(max_uncommitted=5)
    assert book.remove([A]) == {} and not book.changed


def test_commits_reach_the_partitions_window() -> None:
    book = Assignment(max_uncommitted=2)
    book.assign([A])
    window = book.parts[A].window
    assert window.admit(0) and window.admit(1) and not window.admit(2)
    book.committed(A, 2)
    book.committed(("not-owned", 0), 5)
    assert window.admit(2)
