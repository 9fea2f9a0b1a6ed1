"""How far the index is behind the attempts topic, and what the indexer has done: what ``/readyz``
reports and ``fanout_history_lag_seconds`` exports (``fanout.history.metrics``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HistoryStatus:
    """``lag_records``: records in the topic not indexed yet (None until every partition's end is
    known). ``lag_seconds``: 0 when none, else how old the last indexed record is (the index shows the
    history up to then; while catching up from the beginning, that is how far back it still is).
    ``caught_up``: the index reached the end of the topic at least once since it started."""

    lag_records: int | None
    lag_seconds: float | None
    caught_up: bool
    indexed: int = 0
    skipped: int = 0
    rebuilds: int = 0
    error: str | None = None


def lag_records(
    ends: Mapping[int, int], positions: Mapping[int, int], starts: Mapping[int, int]
) -> int | None:
    """Records left to index: per partition, its end offset minus the next offset to index (its start
    offset when nothing was indexed from it yet, or when retention deleted the records before the next
    offset). None when a partition's end or start is unknown."""
    total = 0
    for partition, end in ends.items():
        start = starts.get(partition)
        position = positions.get(partition, start)
        if end < 0 or position is None or position < 0:
            return None
        total += max(0, end - max(position, start or 0))
    return total


def lag_seconds(records: int | None, last_record_ms: int | None, started: float, now: float) -> float | None:
    """0 when caught up; the age of the last indexed record otherwise (or the time since the indexer
    started, when it has indexed nothing yet); None when the record lag is unknown."""
    if records is None:
        return None
    if records == 0:
        return 0.0
    if last_record_ms is None:
        return max(0.0, now - started)
    return max(0.0, now - last_record_ms / 1000)
