"""The retry-tier gate: retry records not due yet, held in memory until due (pure bookkeeping).

A retry tier has one fixed delay, so its records come due in the order they were written: a record
not due yet gates its partition, and the records fetched behind it wait behind it, in order. The gate
holds them for the whole consumer within ``budget`` records:

- a partition's *first* held record is always held (it is what gates the partition), so the gate may
  hold up to ``budget`` plus one record per partition;
- a record behind held ones is held while the consumer holds fewer than ``budget``; past that the
  caller fetches it again later (it seeks back to it), and pauses the partitions that hold records
  (``over_budget``), so that a tier is not fetched one record at a time;
- ``release`` hands out the held records that are due, per partition in the order they were fetched,
  as far as the caller's ``admit`` lets it (the uncommitted window).

Records carry their offset and due time (epoch milliseconds; None: due now, e.g. another group's
record, which the dispatcher skips) as plain values; the gate never reads a record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

TP = tuple[str, int]
R = TypeVar("R")


class RetryGate(Generic[R]):
    __slots__ = ("_held", "budget", "count")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.count = 0
        # Only partitions that hold something: (offset, due in epoch ms or None, record), in fetch order.
        self._held: dict[TP, deque[tuple[int, int | None, R]]] = {}

    def holds(self, tp: TP) -> bool:
        return tp in self._held

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def held(self, tp: TP) -> int:
        queue = self._held.get(tp)
        return len(queue) if queue is not None else 0

    def over_budget(self) -> bool:
        return self.count >= self.budget

    def gate(self, tp: TP, offset: int, due_ms: int, record: R) -> None:
        """``record`` is not due yet and its partition holds nothing: it gates the partition (held
        whatever the budget)."""
        queue = self._held.get(tp)
        if queue is None:
            queue = self._held[tp] = deque()
        queue.append((offset, due_ms, record))
        self.count += 1

    def queue_behind(self, tp: TP, offset: int, due_ms: int | None, record: R) -> bool:
        """``record`` was fetched behind the records ``tp`` holds: held after them (True), or, with the
        budget spent, not (False: the caller fetches it again later)."""
        if self.count >= self.budget:
            return False
        self._held[tp].append((offset, due_ms, record))
        self.count += 1
        return True

    def release(self, now_ms: float, admit: Callable[[TP, int], bool]) -> list[R]:
        """The held records due at ``now_ms``, each partition's in order, up to its first record not due
        or not admitted (``admit(tp, offset)``: the uncommitted window lets it be handed over)."""
        out: list[R] = []
        emptied: list[TP] = []
        for tp, queue in self._held.items():
            while queue:
                offset, due, record = queue[0]
                if (due is not None and due > now_ms) or not admit(tp, offset):
                    break
                queue.popleft()
                out.append(record)
            if not queue:
                emptied.append(tp)
        for tp in emptied:
            del self._held[tp]
        self.count -= len(out)
        return out

    def next_due_ms(self) -> int | None:
        """When the earliest gating record comes due (epoch ms), or None if no held head has a due time."""
        dues = [due for queue in self._held.values() if (due := queue[0][1]) is not None]
        return min(dues) if dues else None

    def drop(self, partitions: Iterable[TP]) -> None:
        """Forget what revoked or lost partitions hold (their next owner fetches it)."""
        for tp in partitions:
            queue = self._held.pop(tp, None)
            if queue is not None:
                self.count -= len(queue)

    def clear(self) -> None:
        self._held.clear()
        self.count = 0
