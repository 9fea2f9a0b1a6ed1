from __future__ import annotations

from fanout.kafka.pauses import PauseBook

A = ("orders", 0)
B = ("orders", 1)


def test_a_newly_assigned_partition_is_told_explicitly_even_when_it_should_fetch() -> None:
    book = PauseBook()
    book.assigned([A, B])
    assert book.changes({A: False, B: True}) == ([B], [A])
    assert book.paused() == {B}


def test_after_that_only_changes_are_calls() -> None:
    book = PauseBook()
    book.assigned([A])
    book.changes({A: True})
    assert book.changes({A: True}) == ([], [])
    assert book.changes({A: False}) == ([], [A])
    assert book.changes({A: False}) == ([], [])


def test_a_partition_revoked_while_paused_is_resumed_when_it_comes_back() -> None:
    """The defect: librdkafka kept the pause flag across unassign/assign; a fresh state said 'fetching'
    and no resume was ever sent."""
    book = PauseBook()
    book.assigned([A])
    book.changes({A: True})
    book.removed([A])
    book.assigned([A])
    assert not book.is_paused(A)
    assert book.changes({A: False}) == ([], [A])


def test_pause_is_idempotent_and_only_for_assigned_partitions() -> None:
    book = PauseBook()
    book.assigned([A])
    assert book.pause(A) is True
    assert book.pause(A) is False
    assert book.pause(B) is False, "not assigned: nothing to tell librdkafka"
    assert book.changes({B: True}) == ([], [])
    assert book.paused() == {A}


def test_an_unknown_flag_counts_as_fetching_and_a_pause_is_told() -> None:
    book = PauseBook()
    book.assigned([A])
    assert not book.is_paused(A)
    assert book.pause(A) is True
    assert book.is_paused(A)


def test_clear_forgets_everything() -> None:
    book = PauseBook()
    book.assigned([A, B])
    book.changes({A: True, B: True})
    book.clear()
    assert book.paused() == frozenset()
    assert book.changes({A: False}) == ([], [])
