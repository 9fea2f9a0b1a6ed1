"""SettleCounts: each fact counted once, the totals derived from them, and bounded label values."""

from __future__ import annotations

from fanout.pipeline.counts import SettleCounts, reason_kind


def test_each_outcome_is_counted_once_by_subscription_and_the_totals_add_them_up() -> None:
    counts = SettleCounts()
    counts.delivered("a")
    counts.delivered("a")
    counts.delivered("b")
    counts.retried("a")
    counts.spilled("b", again=False)
    counts.spilled("b", again=True)
    counts.dead_lettered("a", "permanent failure: HTTP 400")
    counts.dropped("gone")
    assert counts.outcomes == {
        ("a", "delivered"): 2,
        ("b", "delivered"): 1,
        ("a", "retried"): 1,
        ("b", "spilled"): 2,
        ("a", "dead_lettered"): 1,
        ("gone", "dropped"): 1,
    }
    read = counts.outcomes
    read[("a", "delivered")] += 10
    assert counts.outcomes[("a", "delivered")] == 2, "a reader gets a copy"
    assert counts.dead_letters == {("a", "permanent_failure"): 1}
    assert counts.totals() == {
        "delivered": 3,
        "retried": 1,
        "spilled": 2,
        "respilled": 1,
        "dead_lettered": 1,
        "dropped_deleted": 1,
    }


def test_retries_in_place_are_retried_outcomes_but_not_retries_through_a_tier() -> None:
    counts = SettleCounts()
    counts.retried("a")
    counts.retried_in_place("ordered")
    counts.retried_in_place("ordered")
    assert counts.outcomes == {("a", "retried"): 1, ("ordered", "retried"): 2}
    assert counts.totals() == {"retried": 1, "retried_in_place": 2}


def test_poison_and_refused_hand_offs_are_dead_letters_without_being_delivery_outcomes() -> None:
    counts = SettleCounts()
    counts.poison()
    counts.refused("a", "record_too_large", first=True)
    counts.refused("a", "", first=False)  # the smaller dead letter refused again: the same dead letter
    counts.hand_off_dropped()
    assert counts.outcomes == {}
    assert counts.dead_letters == {("", "poison"): 1, ("a", "record_too_large"): 1}
    assert counts.totals() == {"poison": 1, "hand_off_refused": 2, "hand_off_dropped": 1}


def test_reasons_of_any_text_count_under_a_bounded_set_of_kinds() -> None:
    counts = SettleCounts()
    for i in range(1000):
        counts.dead_lettered("a", f"transform failed: no such key 'k{i}'")
        counts.dead_lettered("a", f"record refused: Broker: error {i}")
        counts.dead_lettered("a", f"something new {i}")
    assert counts.dead_letters == {
        ("a", "transform_failed"): 1000,
        ("a", "record_refused"): 1000,
        ("a", "other"): 1000,
    }


def test_reason_kinds() -> None:
    assert reason_kind("circuit open: not attempted within 600s") == "circuit_open"
    assert reason_kind("max age exceeded") == "max_age_exceeded"
    assert reason_kind("record too large") == "record_too_large"
    assert reason_kind("pool timeout") == "pool_timeout"
