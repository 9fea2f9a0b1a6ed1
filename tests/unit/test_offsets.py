from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fanout.pipeline.offsets import PartitionTracker


def tracker() -> PartitionTracker:
    return PartitionTracker("orders", 3, epoch=7)


def test_nothing_tracked_means_nothing_to_commit() -> None:
    t = tracker()
    assert t.committable() is None
    assert t.unsettled == 0
    assert (t.topic, t.partition, t.epoch, t.closed) == ("orders", 3, 7, False)


def test_committable_is_the_lowest_unsettled_offset() -> None:
    t = tracker()
    tickets = {o: t.track(o) for o in (10, 11, 12)}
    assert t.committable() == 10
    tickets[11].release()
    assert t.committable() == 10
    tickets[10].release()
    assert t.committable() == 12
    assert t.unsettled == 1


def test_committable_is_last_plus_one_when_all_settled() -> None:
    t = tracker()
    for o in (5, 6, 9):  # gaps: compacted topics, transaction markers
        t.track(o).release()
    assert t.committable() == 10
    assert t.unsettled == 0


def test_committable_skips_gaps_to_the_next_tracked_offset() -> None:
    t = tracker()
    first, later = t.track(5), t.track(9)
    first.release()
    assert t.committable() == 9
    later.release()
    assert t.committable() == 10


def test_a_fanned_out_record_settles_after_every_release() -> None:
    t = tracker()
    ticket = t.track(0)
    ticket.add(3)  # three deliveries, plus the dispatcher's own hold
    for _ in range(3):
        ticket.release()
        assert t.committable() == 0
    ticket.release()
    assert t.committable() == 1
    assert ticket.pending == 0


def test_add_before_the_initial_release_keeps_the_record_open() -> None:
    t = tracker()
    ticket = t.track(0)
    ticket.add(2)
    ticket.release()  # the dispatcher's hold goes first
    assert t.committable() == 0
    ticket.release()
    ticket.release()
    assert t.committable() == 1


def test_closing_fences_tickets_and_ignores_releases() -> None:
    t = tracker()
    ticket = t.track(4)
    other = t.track(5)
    assert not ticket.fenced
    t.close()
    assert t.closed
    assert ticket.fenced and other.fenced
    ticket.release()
    assert t.unsettled == 0


def test_a_new_tracker_for_the_same_partition_is_not_fenced() -> None:
    old = tracker()
    stale = old.track(1)
    old.close()
    new = PartitionTracker("orders", 3, epoch=8)
    fresh = new.track(1)
    stale.release()  # must not settle anything in the new epoch
    assert new.committable() == 1
    assert stale.fenced and not fresh.fenced
    fresh.release()
    assert new.committable() == 2


@given(
    fanouts=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30),
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=30, max_size=30),
    data=st.data(),
)
def test_committable_never_passes_an_unsettled_offset(
    fanouts: list[int], gaps: list[int], data: st.DataObject
) -> None:
    """Records fan out to 0..3 deliveries; releases arrive in any order."""
    t = tracker()
    tickets, pending, offset = {}, {}, 100
    for fanout, gap in zip(fanouts, gaps, strict=False):
        tickets[offset] = t.track(offset)
        tickets[offset].add(fanout)
        pending[offset] = fanout + 1  # the deliveries plus the dispatcher's hold
        offset += gap
    last = max(tickets)
    releases = [o for o, n in pending.items() for _ in range(n)]
    for o in data.draw(st.permutations(releases)):
        tickets[o].release()
        pending[o] -= 1
        unsettled = [p for p, n in pending.items() if n > 0]
        assert t.committable() == (min(unsettled) if unsettled else last + 1)
        assert t.unsettled == len(unsettled)
