"""What settle counts: one set of plain counters, each fact counted once.

``outcomes``    deliveries by (subscription id, outcome): ``delivered``, ``retried`` (through a tier or,
                key-ordered, in place), ``spilled``, ``dead_lettered``, ``dropped`` (subscription
                deleted). Read as ``fanout_deliveries_total``.
``dead_letters`` dead letters by (subscription id, reason kind, ``reason_kind``); subscription "" for
                poison records. A refused hand-off's smaller dead letter counts here too (once per
                record). Read as ``fanout_dead_letters_total``.
``events``      process-wide happenings with no subscription label: ``fenced`` (outcomes of revoked
                partitions, dropped), ``respilled``, ``retried_in_place``, ``not_attempted``,
                ``skipped_other_group``, ``hand_off_errors``, ``hand_off_refused``, ``hand_off_dropped``.

The data path only bumps integers; ``totals`` adds them up (logs, tests) when asked. ``delivered``, the
outcome of nearly every delivery, is counted by subscription id alone (``delivered_by``), with no
(id, outcome) tuple to build and compare per delivery; ``outcomes`` merges it in when read. Dead-letter
reasons are counted by kind only, so the counters stay bounded whatever the reasons say (the full
reason is in the dead letter's ``fanout-reason`` header and its log line).
"""

from __future__ import annotations

from collections import Counter

DISABLED_REASON = "subscription disabled"
TOO_LARGE_REASON = "record too large"
REFUSED_REASON = "record refused"
REASON_KINDS = (
    ("retries exhausted", "retries_exhausted"),
    ("max age exceeded", "max_age_exceeded"),
    ("endpoint gone", "endpoint_gone"),
    ("permanent failure", "permanent_failure"),
    (DISABLED_REASON, "subscription_disabled"),
    ("transform failed", "transform_failed"),
    ("circuit open", "circuit_open"),
    ("rate limited", "rate_limited"),
    ("lane full", "lane_full"),
    ("endpoint slow", "endpoint_slow"),
    ("lane closed", "lane_closed"),
    (TOO_LARGE_REASON, "record_too_large"),
    (REFUSED_REASON, "record_refused"),
    ("pool timeout", "pool_timeout"),
)
POISON = "poison"


def reason_kind(reason: str) -> str:
    """A dead-letter reason as a short, bounded label value (``retries_exhausted``, ``poison``, ...)."""
    for prefix, kind in REASON_KINDS:
        if reason.startswith(prefix):
            return kind
    return "other"


class SettleCounts:
    __slots__ = ("_outcomes", "dead_letters", "delivered_by", "events")

    def __init__(self) -> None:
        self.delivered_by: Counter[str] = Counter()
        self._outcomes: Counter[tuple[str, str]] = Counter()  # all but ``delivered``
        self.dead_letters: Counter[tuple[str, str]] = Counter()
        self.events: Counter[str] = Counter()

    @property
    def outcomes(self) -> Counter[tuple[str, str]]:
        """Deliveries by (subscription id, outcome), a copy (each counter copied whole first, so that a
        reader on another thread never iterates one the loop is changing)."""
        merged = Counter(dict(self._outcomes))
        for sub_id, n in list(self.delivered_by.items()):
            merged[(sub_id, "delivered")] = n
        return merged

    # -- outcomes of deliveries -------------------------------------------------------------------

    def delivered(self, sub_id: str) -> None:
        self.delivered_by[sub_id] += 1

    def retried(self, sub_id: str) -> None:
        self._outcomes[(sub_id, "retried")] += 1

    def retried_in_place(self, sub_id: str) -> None:
        """A key-ordered delivery retried on a timer (an outcome ``retried``, not through a tier)."""
        self._outcomes[(sub_id, "retried")] += 1
        self.events["retried_in_place"] += 1

    def spilled(self, sub_id: str, again: bool) -> None:
        """``again``: the delivery was coming back from an earlier spill."""
        self._outcomes[(sub_id, "spilled")] += 1
        if again:
            self.events["respilled"] += 1

    def dead_lettered(self, sub_id: str, reason: str) -> None:
        self._outcomes[(sub_id, "dead_lettered")] += 1
        self.dead_letters[(sub_id, reason_kind(reason))] += 1

    def dropped(self, sub_id: str) -> None:
        """A delivery of a deleted subscription, dropped (queued, or read back from a retry tier)."""
        self._outcomes[(sub_id, "dropped")] += 1

    def poison(self) -> None:
        self.dead_letters[("", POISON)] += 1

    # -- hand-offs --------------------------------------------------------------------------------

    def refused(self, sub_id: str, kind: str, first: bool) -> None:
        """The broker refused a record for good; a smaller dead letter replaces it. ``first``: the
        record's first refusal (the one dead letter it becomes)."""
        self.events["hand_off_refused"] += 1
        if first:
            self.dead_letters[(sub_id, kind)] += 1

    def hand_off_error(self) -> None:
        """A produce failed and will be tried again."""
        self.events["hand_off_errors"] += 1

    def hand_off_dropped(self) -> None:
        """A record refused even at its smallest: dropped."""
        self.events["hand_off_dropped"] += 1

    # -- outcomes that are no delivery's ----------------------------------------------------------

    def fenced(self) -> None:
        """An outcome of a revoked partition's delivery, dropped (its new owner delivers it)."""
        self.events["fenced"] += 1

    def not_attempted(self) -> None:
        """A key-ordered delivery that got no connection slot in time, tried again in place."""
        self.events["not_attempted"] += 1

    def skipped_other_group(self) -> None:
        """A retry record another consumer group wrote, skipped."""
        self.events["skipped_other_group"] += 1

    # -- reading ----------------------------------------------------------------------------------

    def totals(self) -> Counter[str]:
        """Process-wide totals by name: ``delivered``, ``retried`` (through a tier), ``spilled``,
        ``dead_lettered``, ``dropped_deleted``, ``poison`` and every event."""
        totals = Counter(self.events)
        for (_, outcome), n in list(self.outcomes.items()):
            totals["dropped_deleted" if outcome == "dropped" else outcome] += n
        if totals["retried_in_place"]:
            totals["retried"] -= totals["retried_in_place"]
        poison = self.dead_letters[("", POISON)]
        if poison:
            totals[POISON] = poison
        return +totals
