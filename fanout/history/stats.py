"""Aggregates over the index: a subscription's stats and time series, and the overview of them all.

Counts and latency percentiles come from the ``rollup`` table, kept per subscription in blocks of 1
and 10 minutes (minute resolution: a window covers the whole minutes it touches; percentiles within
5%, ``fanout.history.latency``). A window reads the 10-minute blocks inside it and the 1-minute blocks
at its edges (``cover``), so its cost is about a tenth of its minutes plus up to 18, whatever the
number of attempts: the overview of the last hour reads about 15 rows per active subscription. The
last success, the last failure and the failure streak are index seeks on ``attempts``.

Success rate is delivered / HTTP attempts: how often the endpoint answered 2xx when it was asked
(spills and attempt-less outcomes do not count). Latency is the attempts' (send to answer or error).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fanout.history import latency
from fanout.history.queries import sub_id
from fanout.history.record import OUTCOMES
from fanout.history.rollup import COARSE, MINUTE_MS, SUMS, cover
from fanout.history.rows import DELIVERED

MAX_POINTS = 1440
STREAK_CAP = 100_000
QUANTILES = (0.5, 0.95, 0.99)
_ROLLUP = ", ".join((*SUMS, "latency", "last_success_ms", "last_failure_ms"))
_COUNTS = ", ".join((*SUMS, "NULL", "last_success_ms", "last_failure_ms"))
_SUMMED = ", ".join((*(f"sum({c})" for c in SUMS), "NULL", "max(last_success_ms)", "max(last_failure_ms)"))
# One subscription's blocks: SQLite's planner prefers the primary key's (span, minute) range, which
# reads every subscription's blocks in the window (a thousand times too many with 1,000 of them).
_OWN_BLOCKS = "FROM rollup INDEXED BY rollup_sub WHERE sub = ? AND span = ? AND minute BETWEEN ? AND ?"
MAX_IDS = 500  # subscriptions per query of ``latencies``


@dataclass(slots=True)
class Totals:
    """Counts by outcome, HTTP attempts, failures and latency over some minutes of one subscription."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    attempted: int = 0
    failed: int = 0
    latency: latency.Histogram = field(default_factory=dict)
    last_success_ms: int | None = None
    last_failure_ms: int | None = None

    def add(self, row: Sequence[Any]) -> None:
        """Add a ``rollup`` row (its columns from ``delivered`` on)."""
        for outcome, n in zip(OUTCOMES, row[:6], strict=True):
            self.counts[outcome] += n
        self.attempted += row[6]
        self.failed += row[7]
        latency.unpack(row[8], self.latency)
        self.last_success_ms = _later(self.last_success_ms, row[9])
        self.last_failure_ms = _later(self.last_failure_ms, row[10])

    @property
    def success_rate(self) -> float | None:
        return None if self.attempted == 0 else round(self.counts["delivered"] / self.attempted, 6)

    def percentiles(self) -> dict[str, float | None]:
        values = latency.percentiles(self.latency, QUANTILES)
        return {f"p{round(q * 100)}": v for q, v in zip(QUANTILES, values, strict=True)}


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(frozen=True, slots=True)
class Streak:
    """The last run of consecutive failures: how many (at most ``STREAK_CAP``, then ``capped``), the
    first and the last, and whether it is still going on (no success since)."""

    failures: int
    first_ms: int
    last_ms: int
    ongoing: bool
    capped: bool


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    subscription: str
    since_ms: int
    until_ms: int
    totals: Totals
    last_success_ms: int | None
    last_failure_ms: int | None
    streak: Streak | None


def _minutes(since_ms: int, until_ms: int) -> tuple[int, int]:
    return since_ms // MINUTE_MS, max(since_ms, until_ms - 1) // MINUTE_MS


def _scalar(con: sqlite3.Connection, sql: str, args: Iterable[object]) -> int | None:
    row = con.execute(sql, tuple(args)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _streak(con: sqlite3.Connection, sub: int, last_success: int | None, last_failure: int) -> Streak:
    before = _scalar(
        con,
        "SELECT max(time_ms) FROM attempts WHERE sub = ? AND outcome = ? AND time_ms < ?",
        (sub, DELIVERED, last_failure),
    )
    after = -1 if before is None else before
    n = _scalar(
        con,
        "SELECT count(*) FROM (SELECT 1 FROM attempts a WHERE a.sub = ? AND a.failed"
        " AND a.time_ms > ? AND a.time_ms <= ? LIMIT ?)",
        (sub, after, last_failure, STREAK_CAP + 1),
    )
    first = _scalar(
        con,
        "SELECT min(time_ms) FROM attempts a WHERE a.sub = ? AND a.failed AND a.time_ms > ?",
        (sub, after),
    )
    count = min(n or 0, STREAK_CAP)
    ongoing = last_success is None or last_success < last_failure
    return Streak(
        count, first if first is not None else last_failure, last_failure, ongoing, (n or 0) > count
    )


def subscription_stats(
    con: sqlite3.Connection, subscription: str, since_ms: int, until_ms: int
) -> SubscriptionStats:
    totals = Totals()
    sub = sub_id(con, subscription)
    if sub is None:
        return SubscriptionStats(subscription, since_ms, until_ms, totals, None, None, None)
    for span, lo, hi in cover(*_minutes(since_ms, until_ms)):
        for row in con.execute(
            f"SELECT {_ROLLUP} {_OWN_BLOCKS}",
            (sub, span, lo, hi),
        ):
            totals.add(row)
    last_success = _scalar(
        con, "SELECT max(time_ms) FROM attempts WHERE sub = ? AND outcome = ?", (sub, DELIVERED)
    )
    last_failure = _scalar(con, "SELECT max(time_ms) FROM attempts a WHERE a.sub = ? AND a.failed", (sub,))
    streak = None if last_failure is None else _streak(con, sub, last_success, last_failure)
    return SubscriptionStats(subscription, since_ms, until_ms, totals, last_success, last_failure, streak)


@dataclass(frozen=True, slots=True)
class Point:
    start_ms: int
    totals: Totals


def series(
    con: sqlite3.Connection,
    subscription: str,
    since_ms: int,
    until_ms: int,
    step_s: int,
    with_latency: bool = True,
) -> list[Point]:
    """``subscription``'s totals per ``step_s`` (a multiple of 60, at most ``MAX_POINTS`` points) from
    the step holding ``since_ms`` to the one holding ``until_ms``; steps without records included.
    Without ``with_latency`` the points' latency histograms stay empty (not read: counts cost less)."""
    if step_s < 60 or step_s % 60:
        raise ValueError("step must be a positive multiple of 60 seconds")
    step = step_s // 60
    first, last = _minutes(since_ms, until_ms)
    first -= first % step
    if (last - first) // step + 1 > MAX_POINTS:
        raise ValueError(f"more than {MAX_POINTS} points: widen the step or narrow the window")
    points = [Point(m * MINUTE_MS, Totals()) for m in range(first, last + 1, step)]
    span = COARSE if step % COARSE == 0 else 1
    sub = sub_id(con, subscription)
    if sub is not None:
        columns = _ROLLUP if with_latency else _COUNTS
        for minute, *row in con.execute(
            f"SELECT minute, {columns} {_OWN_BLOCKS}",
            (sub, span, first, first + len(points) * step - 1),
        ):
            points[(minute - first) // step].totals.add(row)
    return points


@dataclass(frozen=True, slots=True)
class OverviewRow:
    subscription: str
    totals: Totals


def _within(ranges: Sequence[tuple[int, int, int]]) -> tuple[str, list[int]]:
    """The SQL condition (on ``rollup r``) and its arguments for the blocks of ``cover``'s ``ranges``."""
    sql = " OR ".join("(r.span = ? AND r.minute BETWEEN ? AND ?)" for _ in ranges)
    return f"({sql})", [x for block in ranges for x in block]


def overview(
    con: sqlite3.Connection, since_ms: int, until_ms: int, with_latency: bool = True
) -> list[OverviewRow]:
    """Every subscription with records in the window, by name, with its totals (volume, success rate,
    p99 from ``Totals.percentiles``, dead letters, last failure in the window). The counts are summed
    in SQL; merging the latency histograms costs most (Python), so without ``with_latency`` they stay
    empty: ``latencies`` reads them for the subscriptions that need them."""
    where, args = _within(cover(*_minutes(since_ms, until_ms)))
    by_sub: dict[str, Totals] = {}
    for name, *row in con.execute(
        f"SELECT n.name, {_SUMMED} FROM rollup r JOIN names n ON n.id = r.sub WHERE {where} GROUP BY r.sub",
        args,
    ):
        totals = by_sub[name] = Totals()
        totals.add(row)
    if with_latency:
        for name, blob in con.execute(
            f"SELECT n.name, r.latency FROM rollup r JOIN names n ON n.id = r.sub WHERE {where}", args
        ):
            latency.unpack(blob, by_sub[name].latency)
    return [OverviewRow(name, by_sub[name]) for name in sorted(by_sub)]


def latencies(
    con: sqlite3.Connection, subscriptions: Iterable[str], since_ms: int, until_ms: int
) -> dict[str, latency.Histogram]:
    """The latency histogram of each of ``subscriptions`` over the window: the same blocks, so the same
    percentiles, as its ``subscription_stats`` (empty for one without records)."""
    out: dict[str, latency.Histogram] = {}
    names: dict[int, str] = {}
    for name in subscriptions:
        out[name] = {}
        found = sub_id(con, name)
        if found is not None:
            names[found] = name
    ids = sorted(names)
    for span, lo, hi in cover(*_minutes(since_ms, until_ms)):
        for i in range(0, len(ids), MAX_IDS):
            chunk = ids[i : i + MAX_IDS]
            marks = ", ".join("?" * len(chunk))
            for sub, blob in con.execute(
                f"SELECT sub, latency FROM rollup INDEXED BY rollup_sub WHERE sub IN ({marks})"
                " AND span = ? AND minute BETWEEN ? AND ?",
                (*chunk, span, lo, hi),
            ):
                latency.unpack(blob, out[names[sub]])
    return out
