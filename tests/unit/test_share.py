"""Group-wide rate limits: a member's share of a subscription's rate (fanout.model.ownership)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.model.ownership import Ownership, rate_share

TOPICS = {"orders": 4, "fx.retry.0": 6, "fx.retry.1": 6}
RETRY = ["fx.retry.0", "fx.retry.1"]


@given(st.integers(min_value=1, max_value=6), st.data())
def test_the_shares_of_the_members_add_up_to_one(members: int, data: st.DataObject) -> None:
    owned = [Counter[str]() for _ in range(members)]
    for topic, partitions in TOPICS.items():
        for _ in range(partitions):
            owned[data.draw(st.integers(min_value=0, max_value=members - 1))][topic] += 1
    shares = [rate_share(Ownership(dict(o), TOPICS), ["orders"], RETRY) for o in owned]
    assert sum(shares) == pytest.approx(1.0)


def test_a_member_owning_the_source_partitions_but_not_the_tiers_does_not_take_the_whole_rate() -> None:
    sources = Ownership({"orders": 4, "fx.retry.0": 6}, TOPICS)
    tiers = Ownership({"fx.retry.1": 6}, TOPICS)
    assert rate_share(sources, ["orders"], RETRY) == pytest.approx(10 / 16)
    assert rate_share(tiers, ["orders"], RETRY) == pytest.approx(6 / 16)


def test_before_the_first_assignment_a_member_takes_the_whole_rate() -> None:
    assert rate_share(None, ["orders"], RETRY) == 1.0
    assert rate_share(Ownership({}, TOPICS), ["orders"], RETRY) == 0.0
