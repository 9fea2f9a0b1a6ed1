"""The overview's table: one row per subscription, searched, sorted and cut into pages on the server.

A row joins a subscription's definition (from ``GET /v1/subscriptions``) with its health over the
last hour (``HistoryQueries.overview``). Its state is ``disabled`` (with the reason) when it is
disabled, ``failing`` when its latest ``FAILING_STREAK`` attempts or more all failed, else ``enabled``.
Search is a case-insensitive substring of the id, URL, description or topics; a sort puts rows
without the figure last in either direction. The work is linear in the subscriptions (plus the sort),
so 1,000 of them render in a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fanout.api.console.history import Bucket, Failure, Health, Stats

FAILING_STREAK = 3
PAGE_SIZE = 100
SORTS = ("id", "state", "volume", "success", "p99", "dead", "failure")


@dataclass(frozen=True)
class Row:
    id: str
    url: str
    description: str
    topics: tuple[str, ...]
    state: str
    reason: str | None
    stats: Stats
    series: tuple[Bucket, ...]

    @property
    def last_failure(self) -> Failure | None:
        return self.stats.last_failure


@dataclass(frozen=True)
class Totals:
    subscriptions: int
    enabled: int
    disabled: int
    failing: int
    attempts: int
    delivered: int
    dead_lettered: int

    @property
    def success_rate(self) -> float | None:
        return self.delivered / self.attempts if self.attempts else None


@dataclass(frozen=True)
class Table:
    rows: list[Row]
    totals: Totals
    matched: int
    page: int
    pages: int


def state_of(enabled: bool, stats: Stats) -> str:
    if not enabled:
        return "disabled"
    return "failing" if stats.failure_streak >= FAILING_STREAK else "enabled"


def rows(subscriptions: Sequence[Mapping[str, Any]], health: Mapping[str, Health]) -> list[Row]:
    empty = Health(Stats())
    out = []
    for sub in subscriptions:
        h = health.get(sub["id"], empty)
        out.append(
            Row(
                id=sub["id"],
                url=sub.get("url", ""),
                description=sub.get("description", ""),
                topics=tuple(sub.get("topics", ())),
                state=state_of(bool(sub.get("enabled", True)), h.stats),
                reason=sub.get("disabled_reason"),
                stats=h.stats,
                series=h.series,
            )
        )
    return out


def totals(all_rows: Sequence[Row]) -> Totals:
    return Totals(
        subscriptions=len(all_rows),
        enabled=sum(r.state != "disabled" for r in all_rows),
        disabled=sum(r.state == "disabled" for r in all_rows),
        failing=sum(r.state == "failing" for r in all_rows),
        attempts=sum(r.stats.attempts for r in all_rows),
        delivered=sum(r.stats.delivered for r in all_rows),
        dead_lettered=sum(r.stats.dead_lettered for r in all_rows),
    )


def _matches(row: Row, needle: str) -> bool:
    return any(needle in text.lower() for text in (row.id, row.url, row.description, *row.topics))


_STATE_ORDER = {"failing": 0, "disabled": 1, "enabled": 2}
_KEYS: dict[str, Callable[[Row], Any]] = {
    "id": lambda r: r.id,
    "state": lambda r: _STATE_ORDER[r.state],
    "volume": lambda r: r.stats.attempts,
    "success": lambda r: r.stats.success_rate,
    "p99": lambda r: r.stats.p99_ms,
    "dead": lambda r: r.stats.dead_lettered,
    "failure": lambda r: r.last_failure.at if r.last_failure else None,
}


def table(
    all_rows: Sequence[Row], query: str = "", sort: str = "id", descending: bool = False, page: int = 1
) -> Table:
    needle = query.strip().lower()
    found = [r for r in all_rows if _matches(r, needle)] if needle else list(all_rows)
    key = _KEYS.get(sort, _KEYS["id"])
    known = [r for r in found if key(r) is not None]
    unknown = [r for r in found if key(r) is None]
    known.sort(key=lambda r: (key(r), r.id), reverse=descending)
    unknown.sort(key=lambda r: r.id)
    ordered = known + unknown
    pages = max(1, math.ceil(len(ordered) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    start = (page - 1) * PAGE_SIZE
    return Table(ordered[start : start + PAGE_SIZE], totals(all_rows), len(ordered), page, pages)


def with_detail(result: Table, detail: Mapping[str, Health]) -> Table:
    """``result`` with its rows' stats and series replaced by those ``detail`` has for them."""
    shown = []
    for r in result.rows:
        h = detail.get(r.id)
        shown.append(r if h is None else dataclasses.replace(r, stats=h.stats, series=h.series))
    return dataclasses.replace(result, rows=shown)
