"""Batches from the consumer thread to a ``BatchTarget`` on the event loop, one batch at a time.

The consumer thread ``hand``s a batch over with ``call_soon_threadsafe`` and fetches nothing more while
it is ``out``: fetching ahead of the loop would outrun its flow control. On the loop the batch is
submitted; a batch the target refused (at capacity) comes back as ``pending``, and records handed
over while the target is not ready are added behind it (``keep``). ``resubmit`` hands the pending
batch over again, before anything fetched later, once the target is ready. Records of partitions that
changed hands are dropped from it (``forget``): their next owner fetches them again.

``_handed`` is written by the consumer thread only, ``_processed`` and ``pending`` (while a batch is
out) by the loop only, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection
from typing import Generic, Protocol, TypeVar

from fanout.model.ports import BatchTarget

TP = tuple[str, int]


class _Record(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...


R = TypeVar("R", bound=_Record)


class Handover(Generic[R]):
    def __init__(self, loop: asyncio.AbstractEventLoop, target: BatchTarget[R]) -> None:
        self._loop = loop
        self._target = target
        self._handed = 0
        self._processed = 0
        self._taken = threading.Event()
        self.pending: list[R] | None = None

    @property
    def out(self) -> bool:
        """A batch is on its way to the loop, not submitted yet."""
        return self._handed > self._processed

    def wait_taken(self, timeout: float) -> None:
        self._taken.wait(timeout)
        self._taken.clear()

    def hand(self, records: list[R]) -> None:
        self._handed += 1
        self._loop.call_soon_threadsafe(self._submit, records)

    def _submit(self, records: list[R]) -> None:
        try:
            if not self._target.submit(records):
                self.pending = records
        finally:
            self._processed += 1
            self._taken.set()

    def keep(self, records: list[R]) -> None:
        """Records the target may not take now: behind the pending batch, in order."""
        if self.pending is None:
            self.pending = records
        else:
            self.pending.extend(records)

    def resubmit(self) -> bool:
        """Hand the pending batch over again (True), if there is one."""
        pending = self.pending
        if pending is None:
            return False
        self.pending = None
        self.hand(pending)
        return True

    def forget(self, partitions: Collection[TP]) -> None:
        pending = self.pending
        if pending:
            kept = [r for r in pending if (r.topic() or "", r.partition() or 0) not in partitions]
            self.pending = kept or None
