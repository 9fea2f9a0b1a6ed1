"""Group-wide rate limits: each member enforces a share of every subscription's rate, in proportion to
the partitions it owns of those that carry the subscription's deliveries (its source topics and the
retry tiers), recomputed at every rebalance. N workers or N pods then send, together, at the configured
rate, with no coordination service: the shares of the members add up to one.

The retry tiers count as much as the source partitions because a paced subscription's backlog comes
back through them: a lane spills what it cannot start within ``lane_max_wait``, and those deliveries
return on whichever member owns the tier partition they were written to. A member that owns all of a
topic's source partitions but few retry partitions takes the events first, at its share, and the
spilled rest is sent by the members that own the tiers, at theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ownership:
    """Partitions this member owns per topic, and how many each topic has in all."""

    owned: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)

    def fraction(self, topics: Iterable[str]) -> float:
        owned = total = 0
        for topic in topics:
            owned += self.owned.get(topic, 0)
            total += self.totals.get(topic, 0)
        return owned / total if total else 0.0


def rate_share(
    ownership: Ownership | None, source_topics: Iterable[str], retry_topics: Iterable[str]
) -> float:
    """This member's fraction of a subscription's rate; 1.0 before the first assignment is known."""
    if ownership is None:
        return 1.0
    return ownership.fraction([*source_topics, *retry_topics])
