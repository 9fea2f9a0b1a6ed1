"""Holding and pausing (pure bookkeeping): how long the consumer has been held, and what it has told
librdkafka about pausing each assigned partition.

``Hold``: while the dispatcher is at capacity (its ``ready`` flag is clear) the poll loop hands nothing
over. A short hold, under ``without_pause`` seconds, just skips ``consume()``: librdkafka keeps its
prefetched records, so resuming is immediate. A longer hold pauses every partition and polls again, so
that rebalances (and the group's liveness) are still served.

``PauseBook``: librdkafka keeps the application's pause flag on its partition object across an
incremental unassign and assign: a partition revoked while paused comes back *paused*, whatever the
application believes. So a partition's flag is *unknown* when it is assigned, and the next ``changes``
tells librdkafka explicitly, pause or resume. After that, a call is made only when the wanted state
changes. The book never guesses a flag it has not set itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

TP = tuple[str, int]


class Holding(enum.Enum):
    NO = "fetch"
    SHORT = "skip consume"
    LONG = "pause every partition and poll"


class Hold:
    """How long the dispatcher has been at capacity, and what the poll loop does about it."""

    __slots__ = ("since", "without_pause")

    def __init__(self, without_pause: float) -> None:
        self.without_pause = without_pause
        self.since: float | None = None

    def update(self, held: bool, now: float) -> Holding:
        """``held``: the dispatcher is at capacity at ``now`` (monotonic seconds)."""
        if not held:
            self.since = None
            return Holding.NO
        if self.since is None:
            self.since = now
        return Holding.SHORT if now - self.since < self.without_pause else Holding.LONG


class PauseBook:
    """Per assigned partition: True (paused), False (fetching) or None (unknown: tell librdkafka)."""

    __slots__ = ("_flags",)

    def __init__(self) -> None:
        self._flags: dict[TP, bool | None] = {}

    def assigned(self, partitions: Iterable[TP]) -> None:
        """Newly assigned partitions: their flag in librdkafka is unknown (possibly a stale pause)."""
        for tp in partitions:
            self._flags[tp] = None

    def removed(self, partitions: Iterable[TP]) -> None:
        for tp in partitions:
            self._flags.pop(tp, None)

    def clear(self) -> None:
        self._flags.clear()

    def is_paused(self, tp: TP) -> bool:
        """Paused by this consumer (an unknown flag counts as fetching: records that arrive were fetched)."""
        return self._flags.get(tp) is True

    def paused(self) -> frozenset[TP]:
        return frozenset(tp for tp, flag in list(self._flags.items()) if flag)

    def pause(self, tp: TP) -> bool:
        """Record ``tp`` as paused; True if librdkafka must be told (it is assigned and not known paused)."""
        if tp not in self._flags or self._flags[tp] is True:
            return False
        self._flags[tp] = True
        return True

    def changes(self, wanted: Mapping[TP, bool]) -> tuple[list[TP], list[TP]]:
        """The assigned partitions to pause and to resume so that librdkafka's flags become ``wanted``
        (partitions not in ``wanted`` are left alone); they are recorded as done, and the caller makes
        the calls."""
        to_pause: list[TP] = []
        to_resume: list[TP] = []
        flags = self._flags
        for tp, paused in wanted.items():
            if tp not in flags or flags[tp] is paused:
                continue
            flags[tp] = paused
            (to_pause if paused else to_resume).append(tp)
        return to_pause, to_resume
