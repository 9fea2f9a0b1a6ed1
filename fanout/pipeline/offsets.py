"""offsets: which offset of a partition is safe to commit.

A record's offset becomes settled when every delivery it fanned out to is settled: delivered, or
acknowledged by the broker on a retry or dead-letter topic. The committable offset of a partition is
the lowest unsettled offset, or the last tracked offset + 1 when everything is settled.

Each tracker belongs to one assignment ``epoch``. When its partition is revoked the tracker is closed:
tickets from it are then ``fenced``, their releases are ignored, and lanes drop their queued work.
"""

from __future__ import annotations

from collections import deque


class Ticket:
    """The settlement of one record: ``pending`` deliveries left; ``release()`` once per delivery."""

    __slots__ = ("offset", "pending", "tracker")

    def __init__(self, tracker: PartitionTracker, offset: int) -> None:
        self.tracker = tracker
        self.offset = offset
        self.pending = 1

    def add(self, n: int) -> None:
        """The record fans out to ``n`` more deliveries (each will call ``release``)."""
        self.pending += n

    def release(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.tracker._settled(self.offset)

    @property
    def fenced(self) -> bool:
        return self.tracker.closed


class PartitionTracker:
    """Tracks the unsettled offsets of one partition within one assignment epoch."""

    __slots__ = ("_next", "_open", "_order", "closed", "epoch", "partition", "topic")

    def __init__(self, topic: str, partition: int, epoch: int) -> None:
        self.topic = topic
        self.partition = partition
        self.epoch = epoch
        self.closed = False
        self._order: deque[int] = deque()
        self._open: set[int] = set()
        self._next: int | None = None

    def track(self, offset: int) -> Ticket:
        """Start tracking ``offset`` (offsets arrive in increasing order). The ticket starts at 1 pending."""
        self._order.append(offset)
        self._open.add(offset)
        self._next = offset + 1
        return Ticket(self, offset)

    def _settled(self, offset: int) -> None:
        if not self.closed:
            self._open.discard(offset)

    def committable(self) -> int | None:
        """The offset to commit (next to read after a restart), or None if nothing was tracked (or the
        tracker is closed: a revoked partition's offsets are no longer this member's to commit)."""
        if self.closed:
            return None
        order, still_open = self._order, self._open
        while order and order[0] not in still_open:
            order.popleft()
        return order[0] if order else self._next

    @property
    def unsettled(self) -> int:
        return len(self._open)

    def close(self) -> None:
        self.closed = True
        self._open.clear()
        self._order.clear()
