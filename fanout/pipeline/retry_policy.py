"""When a delivery is tried again, in which retry tier it waits, and when it may wait no longer.

- After a failed attempt: the subscription's schedule (or the default) gives the delay of attempt n,
  scaled by a random factor in [1 - jitter, 1 + jitter]; a ``Retry-After`` raises it (never lowers it),
  clamped to ``retry_after_max``. The schedule running out, or the next attempt falling after ``max_age``
  counted from the first attempt, ends the delivery (a dead letter).
- After a spill (not an attempt): the delivery comes back when its lane said, the first tier's delay
  when it said nothing, never later than the longest tier. ``max_age`` still counts from the first
  attempt, so time spent on fanout's own pace is never charged; a delivery never attempted is bounded by
  ``max_pending`` from when fanout routed it.
- The tier: the smallest whose delay is at least the delay due (the last for longer delays), so every
  record of a tier becomes due in the order it was written.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass

from fanout.model.event import Delivery

RETRIES_EXHAUSTED = "retries exhausted"
MAX_AGE_EXCEEDED = "max age exceeded"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Seconds throughout. ``tiers``: the retry tiers' delays, increasing. ``schedule``, ``max_age``: the
    defaults for subscriptions without their own. ``max_pending``: how long a delivery never attempted
    may wait. ``retry_after_max``: the clamp on a ``Retry-After``."""

    tiers: tuple[float, ...]
    schedule: tuple[float, ...]
    jitter: float
    max_age: float
    max_pending: float
    retry_after_max: float

    def __post_init__(self) -> None:
        if not self.tiers or any(b <= a for a, b in itertools.pairwise(self.tiers)):
            raise ValueError(f"retry tiers must be a non-empty increasing list, not {self.tiers}")
        if not 0 <= self.jitter < 1 or not all(math.isfinite(d) and d >= 0 for d in self.schedule):
            raise ValueError("jitter must be in [0, 1) and schedule delays non-negative seconds")

    def next_delay(self, delivery: Delivery, retry_after: float | None) -> tuple[float | None, str]:
        """Seconds until the next attempt of ``delivery`` (its ``attempt`` already counts the one that
        failed), or None and the reason when the schedule or ``max_age`` has run out."""
        policy = delivery.subscription.retry
        schedule = policy.schedule or self.schedule
        if delivery.attempt > len(schedule):
            return None, RETRIES_EXHAUSTED
        jitter = self.jitter
        delay = schedule[delivery.attempt - 1] * (1 + random.uniform(-jitter, jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        if delivery.age + delay > (policy.max_age or self.max_age):
            return None, MAX_AGE_EXCEEDED
        return delay, ""

    def spill_expired(self, delivery: Delivery, reason: str) -> str | None:
        """The dead-letter reason of a spill (``reason``: why its lane gave it up) that may wait no
        longer: ``reason`` itself once ``max_age`` ran out since the first attempt, ``<reason>: not
        attempted within <max_pending>s`` for one never attempted; None while it may wait."""
        if delivery.first_attempt:
            if delivery.age >= (delivery.subscription.retry.max_age or self.max_age):
                return reason
        elif delivery.waited >= self.max_pending:
            return f"{reason}: not attempted within {self.max_pending:.0f}s"
        return None

    def spill_delay(self, delay: float | None) -> float:
        """How long a spill waits: as its lane said (``delay``), the first tier's delay when it said
        nothing, never longer than the longest tier."""
        return self.tiers[0] if delay is None else min(delay, self.tiers[-1])

    def tier_for(self, delay: float) -> int:
        """The smallest tier whose delay is at least ``delay`` (the last tier for longer delays)."""
        return min(bisect.bisect_left(self.tiers, delay), len(self.tiers) - 1)
