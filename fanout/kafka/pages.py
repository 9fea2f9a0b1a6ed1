"""Reading a topic a page at a time: the records of a time range that a predicate accepts, oldest
first, with the positions where the next page starts (the dead-letter browse of
``fanout.control.deadletters``).

Every partition is read from its start position (``after``, or the first record at or after
``since_ms``) up to its end when the read began (or the first record at ``until_ms``); a partition
stops once it has ``limit`` matches, and the whole read stops after ``scan_budget`` records. The
matches are merged by (timestamp, partition, offset) and cut at ``limit``. ``positions`` holds, per
partition, the first match not returned or where the read stopped, so paging never skips or repeats
a record; ``at_end`` says every partition was read to its end. Blocking: call from a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fanout.config import Settings
from fanout.kafka.ranges import RangeReader, RangeRecord

SCAN_BUDGET = 100_000


@dataclass(frozen=True)
class RawPage:
    records: list[RangeRecord]
    positions: dict[int, int]
    at_end: bool


def read_page(
    settings: Settings,
    topic: str,
    matches: Callable[[RangeRecord], bool],
    limit: int,
    since_ms: int | None = None,
    until_ms: int | None = None,
    after: dict[int, int] | None = None,
    scan_budget: int = SCAN_BUDGET,
) -> RawPage:
    with RangeReader(settings) as reader:
        parts = reader.partitions(topic)
        ends = reader.offsets_at(topic, parts, until_ms, beginning=False)
        starts = reader.offsets_at(topic, parts, since_ms, beginning=True)
        if after is not None:
            starts = {p: max(starts[p], after.get(p, starts[p])) for p in parts}
        found: dict[int, list[RangeRecord]] = {p: [] for p in parts}
        position = dict(starts)
        for scanned, record in enumerate(reader.read(topic, starts, ends), start=1):
            position[record.partition] = record.offset + 1
            if matches(record):
                found[record.partition].append(record)
                if len(found[record.partition]) >= limit:
                    reader.pause(record.partition)
            if scanned >= scan_budget:
                break
    merged = sorted(
        (r for records in found.values() for r in records),
        key=lambda r: (r.timestamp_ms, r.partition, r.offset),
    )
    positions = {}
    for p in parts:
        untaken = [r.offset for r in merged[limit:] if r.partition == p]
        positions[p] = min(untaken) if untaken else position[p]
    return RawPage(merged[:limit], positions, all(positions[p] >= ends[p] for p in parts))
