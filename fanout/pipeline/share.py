"""Group-wide rate limits: each member enforces a share of every subscription's rate, in proportion to
the source partitions it owns, recomputed at every rebalance. N workers or N pods then send, together,
at the configured rate, with no coordination service.

A member that owns none of a subscription's source partitions can still own retry-tier partitions;
it then takes its share of the retry partitions instead, so those retries are not starved (at the
cost that, while retries flow on such a member, the group can briefly exceed the rate by that share).
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
    share = ownership.fraction(source_topics)
    return share if share > 0 else ownership.fraction(retry_topics)
