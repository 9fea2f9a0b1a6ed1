"""The uncommitted window of one partition: records read but not committed, bounded exactly (pure).

A record is handed over only while the window, from the last committed offset up to and including it,
holds at most ``limit`` (``max_uncommitted``) records; a crash then re-delivers at most that many. A
record refused here is not lost: the caller pauses its partition and seeks back to it, so it is
fetched again. The partition is *backpressured* from when the window is full (or a record was refused)
until commits bring it down to half, so that it does not flap between pause and resume at every
commit.
"""

from __future__ import annotations


class UncommittedWindow:
    """``committed``: the partition's committed offset (None until known: the first record read sets
    it); ``last``: the last offset handed over; ``backpressured``: the partition should stay paused."""

    __slots__ = ("backpressured", "committed", "last", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.committed: int | None = None
        self.last: int | None = None
        self.backpressured = False

    def admit(self, offset: int) -> bool:
        """May the record at ``offset`` be handed over? True: it is now the last handed over. False: it
        is past the bound; the partition is backpressured and the caller rewinds to ``offset``."""
        committed = self.committed
        if committed is None:
            committed = self.committed = offset
        if offset + 1 - committed > self.limit:
            self.backpressured = True
            return False
        self.last = offset
        return True

    def commit(self, offset: int) -> None:
        """The group committed ``offset`` (the next record to read) for this partition."""
        self.committed = offset

    def pressed(self) -> bool:
        """Is the partition backpressured now? Set when the window reaches ``limit``, cleared when it is
        down to ``limit // 2``."""
        last, committed = self.last, self.committed
        if last is not None and committed is not None:
            size = last + 1 - committed
            if not self.backpressured and size >= self.limit:
                self.backpressured = True
            elif self.backpressured and size <= self.limit // 2:
                self.backpressured = False
        return self.backpressured
