"""Rebalance bookkeeping (pure): the partitions this consumer owns, each under a local epoch.

The Python client does not expose the group generation, so each assignment gets a new local epoch, and
everything the event loop does for a partition carries the epoch it was assigned in: offsets stored
from an older epoch are ignored (``current``), and a drain closes only the trackers of the epochs it was
given, so a partition revoked (or lost) and assigned again keeps its new tracker.

Each owned partition has its uncommitted window (``fanout.kafka.window``). ``changed`` says ownership
changed since the loop was last told (it is told after ``consume()`` returns, never inside a callback).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fanout.kafka.window import UncommittedWindow

TP = tuple[str, int]


class Owned:
    __slots__ = ("epoch", "window")

    def __init__(self, epoch: int, window: UncommittedWindow) -> None:
        self.epoch = epoch
        self.window = window


class Assignment:
    __slots__ = ("changed", "epoch", "limit", "parts")

    def __init__(self, max_uncommitted: int) -> None:
        self.limit = max_uncommitted
        self.epoch = 0
        self.parts: dict[TP, Owned] = {}
        self.changed = False

    def __len__(self) -> int:
        return len(self.parts)

    def assign(self, partitions: Iterable[TP]) -> int:
        """Newly assigned partitions, under a new epoch (returned); each starts a fresh window."""
        self.epoch += 1
        for tp in partitions:
            self.parts[tp] = Owned(self.epoch, UncommittedWindow(self.limit))
        self.changed = True
        return self.epoch

    def owned(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Those of ``partitions`` this consumer owns, with their epochs."""
        parts = self.parts
        return {tp: owned.epoch for tp in partitions if (owned := parts.get(tp)) is not None}

    def remove(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Partitions revoked (after their drain) or lost: no longer owned. Those that were, with their
        epochs."""
        parts = self.parts
        gone = {tp: owned.epoch for tp in partitions if (owned := parts.pop(tp, None)) is not None}
        if gone:
            self.changed = True
        return gone

    def clear(self) -> None:
        self.parts.clear()

    def current(self, offsets: Mapping[TP, int], epochs: Mapping[TP, int]) -> list[tuple[TP, int]]:
        """The ``offsets`` (computed by the loop for the ``epochs`` it knew) that are still this
        consumer's to store: their partition is owned under that same epoch."""
        parts = self.parts
        return [
            (tp, offset)
            for tp, offset in offsets.items()
            if (owned := parts.get(tp)) is not None and owned.epoch == epochs.get(tp)
        ]

    def committed(self, tp: TP, offset: int) -> None:
        owned = self.parts.get(tp)
        if owned is not None:
            owned.window.commit(offset)

    def partitions_by_topic(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for topic, _ in self.parts:
            counts[topic] = counts.get(topic, 0) + 1
        return counts
