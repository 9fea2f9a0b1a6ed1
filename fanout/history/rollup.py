"""The rollup table's blocks: per subscription, the totals of its records in each block of ``span``
minutes (``SPANS``: 1 and 10), written by ingest in the transaction of the rows (``UPSERT`` adds a
batch's ``Block`` to the stored one) and read by ``fanout.history.stats``.

A window of whole minutes reads the 10-minute blocks that fit inside it and the 1-minute blocks at
its edges (``cover``): the overview of the last hour reads about 15 rows per active subscription, not
60, and a day's stats 144 plus the edges, not 1,440.
"""

from __future__ import annotations

from typing import Any

from fanout.history import latency
from fanout.history.record import OUTCOMES, Outcome

MINUTE_MS = 60_000
SPANS = (1, 10)  # minutes per rollup block
COARSE = SPANS[-1]
_DELIVERED = OUTCOMES.index(Outcome.DELIVERED)
_FAILED = tuple(o.failed for o in OUTCOMES)

SUMS = (*(o.value for o in OUTCOMES), "attempted", "failed")  # a block's counters, in this order
_ATTEMPTED, _FAILURES = len(OUTCOMES), len(OUTCOMES) + 1
UPSERT = (
    f"INSERT INTO rollup (span, minute, sub, {', '.join(SUMS)}, latency, last_success_ms, last_failure_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (span, minute, sub) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUMS)
    + ", latency = merge_latency(latency, excluded.latency)"
    + "".join(
        f", {c} = max(coalesce({c}, excluded.{c}), coalesce(excluded.{c}, {c}))"
        for c in ("last_success_ms", "last_failure_ms")
    )
)


class Block:
    """The totals of one subscription's records in one block, as ingest adds them up."""

    __slots__ = ("hist", "last_failure", "last_success", "sums")

    def __init__(self) -> None:
        self.sums = [0] * len(SUMS)
        self.hist: latency.Histogram = {}
        self.last_success: int | None = None
        self.last_failure: int | None = None

    def add(self, code: int, time_ms: int, latency_ms: float | None) -> None:
        """Add a record whose outcome is ``OUTCOMES[code]``."""
        sums = self.sums
        sums[code] += 1
        if latency_ms is not None:
            sums[_ATTEMPTED] += 1
            b = latency.bucket(latency_ms)
            self.hist[b] = self.hist.get(b, 0) + 1
        if _FAILED[code]:
            sums[_FAILURES] += 1
            if self.last_failure is None or time_ms > self.last_failure:
                self.last_failure = time_ms
        elif code == _DELIVERED and (self.last_success is None or time_ms > self.last_success):
            self.last_success = time_ms

    def merge(self, other: Block) -> None:
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n
        self.last_success = _later(self.last_success, other.last_success)
        self.last_failure = _later(self.last_failure, other.last_failure)

    def row(self, span: int, minute: int, sub: int) -> tuple[Any, ...]:
        hist = latency.pack(self.hist) if self.hist else None
        return (span, minute, sub, *self.sums, hist, self.last_success, self.last_failure)


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def rows(minutes: dict[tuple[int, int], Block]) -> list[tuple[Any, ...]]:
    """The ``UPSERT`` rows of a batch: its 1-minute blocks (by (minute, sub)) and the coarser blocks
    made of them."""
    out = [block.row(1, minute, sub) for (minute, sub), block in minutes.items()]
    for span in SPANS[1:]:
        coarse: dict[tuple[int, int], Block] = {}
        for (minute, sub), block in minutes.items():
            key = (minute - minute % span, sub)
            into = coarse.get(key)
            if into is None:
                into = coarse[key] = Block()
            into.merge(block)
        out += [block.row(span, start, sub) for (start, sub), block in coarse.items()]
    return out


def cover(first: int, last: int) -> list[tuple[int, int, int]]:
    """The rollup blocks that tile the minutes ``first``..``last`` exactly, as (span, first block
    start, last block start): 10-minute blocks inside, 1-minute blocks at the edges."""
    inner_first = -(-first // COARSE) * COARSE
    inner_end = (last + 1) // COARSE * COARSE
    if inner_first >= inner_end:
        return [(1, first, last)]
    ranges = [(COARSE, inner_first, inner_end - COARSE)]
    if first < inner_first:
        ranges.append((1, first, inner_first - 1))
    if inner_end <= last:
        ranges.append((1, inner_end, last))
    return ranges


def prune_before(cutoff_minute: int, span: int) -> int:
    """The last start of a ``span`` block that ends at or before ``cutoff_minute``."""
    return cutoff_minute - span
