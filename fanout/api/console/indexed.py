"""The console's ``HistoryQueries`` over the delivery-history index (``fanout.history.store.HistoryStore``).

Only the store's query methods are called (``overview``, ``stats``, ``series``, ``attempts``,
``event``), each in a worker thread (they block), and their answers are turned into the console's
value objects (``fanout.api.console.history``):

- counts: ``attempts`` are HTTP attempts, ``delivered`` the 2xx ones, ``failed`` the rest of them;
  ``dead_lettered`` counts dead-letter outcomes (with or without an attempt); latencies are the
  index's percentiles (within 5%, minute resolution).
- the overview needs a streak only to tell ``failing`` (``FAILING_STREAK`` failures in a row) from
  not: it reads the latest ``FAILING_STREAK`` records (an index seek) of the subscriptions whose
  latest record in the window is a failure, and counts the failures that lead them (a spill ends
  that count there; the subscription page shows the store's whole streak). The rest have none.
- the overview sums counts in SQL; merging latency histograms costs most, so it does that for every
  subscription only when asked (``with_latency``: sorting by p99). Latency percentiles, sparklines
  (counts only) and the last failure's status are read for the rows of the page shown (``detail``);
  the overview and those details are reused for ``OVERVIEW_MAX_AGE`` seconds.
- the outcome ``retry_scheduled`` reads ``retry``; a response body that is not UTF-8 is shown as its
  size.

A query the store interrupts (``QueryTimeout``) or finds corrupt becomes a 503 page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from fanout.api.console.history import (
    Attempt,
    Bucket,
    EventHistory,
    Failure,
    Health,
    Outcome,
    Stats,
    Timeline,
)
from fanout.api.console.overview import FAILING_STREAK
from fanout.api.problems import Problem
from fanout.history import latency
from fanout.history.queries import AttemptQuery
from fanout.history.record import AttemptRecord
from fanout.history.schema import IndexCorrupt
from fanout.history.stats import QUANTILES, SubscriptionStats, Totals
from fanout.history.store import HistoryStore, QueryTimeout

T = TypeVar("T")
# a shown row's last failure, series and latency percentiles (p50, p95, p99), and when they were read
_Detail = tuple[float, Failure | None, tuple[Bucket, ...], tuple[float | None, ...]]
MINUTE = 60
OVERVIEW_MAX_AGE = 5.0  # seconds an overview answer is reused (the index has minute resolution)
MAX_DETAILS = 5000  # rows' details kept for reuse (then all are dropped)
_OUTCOME: dict[str, Outcome] = {
    "delivered": "delivered",
    "retry_scheduled": "retry",
    "spilled": "spilled",
    "dead_lettered": "dead_lettered",
    "dropped": "dropped",
    "disabled": "disabled",
}


def _s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def stats_of(totals: Totals, streak: int = 0, last_failure: Failure | None = None) -> Stats:
    """The console's ``Stats`` of the index's totals over a window."""
    delivered = totals.counts["delivered"]
    p = totals.percentiles()
    if last_failure is None and totals.last_failure_ms is not None:
        last_failure = Failure(totals.last_failure_ms / 1000)
    return Stats(
        attempts=totals.attempted,
        delivered=delivered,
        failed=totals.attempted - delivered,
        dead_lettered=totals.counts["dead_lettered"],
        p50_ms=p["p50"],
        p95_ms=p["p95"],
        p99_ms=p["p99"],
        last_success=_s(totals.last_success_ms),
        last_failure=last_failure,
        failure_streak=streak,
    )


def attempt_of(r: AttemptRecord) -> Attempt:
    response = ""
    if r.response is not None and r.response.body is not None:
        body = r.response.body
        response = body.text if body.encoding == "utf-8" else f"[{body.size} bytes, not UTF-8]"
    return Attempt(
        event_id=r.event_id,
        subscription=r.subscription,
        attempt=r.attempt,
        at=r.time_ms / 1000,
        outcome=_OUTCOME[r.outcome.value],
        status=None if r.response is None else r.response.status,
        latency_ms=None if r.request is None else r.request.latency_ms,
        error=None if r.error is None or r.response is not None else r.error.kind,
        response=response,
        not_before=None if r.retry is None else r.retry.not_before_ms / 1000,
        reason=r.reason,
    )


def _failure_of(r: AttemptRecord) -> Failure:
    a = attempt_of(r)
    return Failure(a.at, a.status, a.error or (r.reason if a.status is None else None))


class IndexedHistory:
    """``HistoryQueries`` over ``store`` (which the history indexer keeps up to date). ``overview``
    answers, and each row's sparkline and last failure, are reused for ``max_age`` seconds (one
    overview computation at a time; requests meanwhile wait for it): searching, sorting and paging the
    overview then read the index only for rows not shown in that time."""

    def __init__(self, store: HistoryStore, max_age: float = OVERVIEW_MAX_AGE) -> None:
        self.store = store
        self.max_age = max_age
        self._overview_lock = asyncio.Lock()
        self._cached: tuple[float, float, bool, Mapping[str, Health]] | None = None
        self._details: dict[tuple[str, float, int, float | None], _Detail] = {}

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except QueryTimeout as exc:
            raise Problem(503, f"The delivery history is slow to answer: {exc}.") from None
        except IndexCorrupt:
            raise Problem(503, "The delivery history index is being rebuilt; try again shortly.") from None

    def _streak(self, s: SubscriptionStats) -> int:
        return s.streak.failures if s.streak is not None and s.streak.ongoing else 0

    def _last_failure(self, subscription: str) -> Failure | None:
        page = self.store.attempts(subscription, AttemptQuery(outcome="failed", limit=1))
        return _failure_of(page.attempts[0]) if page.attempts else None

    def _latest_failures(self, subscription: str) -> int:
        """How many of the subscription's latest ``FAILING_STREAK`` records failed in a row."""
        page = self.store.attempts(subscription, AttemptQuery(limit=FAILING_STREAK))
        streak = 0
        for r in page.attempts:
            if not r.failed:
                break
            streak += 1
        return streak

    def _overview(self, window: float, with_latency: bool) -> dict[str, Health]:
        out = {}
        for row in self.store.overview(window, with_latency):
            t, streak = row.totals, 0
            if t.last_failure_ms is not None and (t.last_success_ms or 0) < t.last_failure_ms:
                streak = self._latest_failures(row.subscription)
            out[row.subscription] = Health(stats_of(t, streak))
        return out

    async def overview(self, window: float, with_latency: bool = True) -> Mapping[str, Health]:
        async with self._overview_lock:
            cached = self._cached
            if (
                cached is not None
                and cached[1] == window
                and (cached[2] or not with_latency)
                and time.monotonic() - cached[0] < self.max_age
            ):
                return cached[3]
            fresh = await self._run(lambda: self._overview(window, with_latency))
            self._cached = (time.monotonic(), window, with_latency, fresh)
            return fresh

    def _series(self, subscription: str, window: float, buckets: int) -> tuple[Bucket, ...]:
        step = max(MINUTE, int(window / buckets) // MINUTE * MINUTE)
        points = self.store.series(subscription, window, step, with_latency=False)[-buckets:]
        return tuple(
            Bucket(
                p.start_ms / 1000,
                p.totals.counts["delivered"],
                p.totals.attempted - p.totals.counts["delivered"],
            )
            for p in points
        )

    def _detail(self, shown: Mapping[str, Stats], window: float, buckets: int) -> dict[str, Health]:
        now = time.monotonic()
        if len(self._details) > MAX_DETAILS:
            self._details.clear()
        keys = {
            sub: (sub, window, buckets, None if s.last_failure is None else s.last_failure.at)
            for sub, s in shown.items()
        }
        entries: dict[str, _Detail] = {}
        for sub, key in keys.items():
            cached = self._details.get(key)
            if cached is not None and now - cached[0] < self.max_age:
                entries[sub] = cached
        stale = [sub for sub in shown if sub not in entries and shown[sub].attempts]
        hists = self.store.latencies(stale, window)
        out = {}
        for sub, stats in shown.items():
            entry = entries.get(sub)
            if entry is None:
                failure = None
                if stats.last_failure is not None:
                    found = self._last_failure(sub)
                    failure = found if found is not None and found.at == stats.last_failure.at else None
                figures = tuple(latency.percentiles(hists.get(sub, {}), QUANTILES))
                entry = (now, failure, self._series(sub, window, buckets), figures)
                self._details[keys[sub]] = entry
            _, failure, series, figures = entry
            p50, p95, p99 = figures
            stats = dataclasses.replace(stats, p50_ms=p50, p95_ms=p95, p99_ms=p99)
            if failure is not None:
                stats = dataclasses.replace(stats, last_failure=failure)
            out[sub] = Health(stats, series)
        return out

    async def detail(self, shown: Mapping[str, Stats], window: float, buckets: int) -> Mapping[str, Health]:
        return await self._run(lambda: self._detail(shown, window, buckets))

    def _stats(self, subscription: str, window: float) -> Stats:
        s = self.store.stats(subscription, window)
        last = self._last_failure(subscription) if s.last_failure_ms is not None else None
        stats = stats_of(s.totals, self._streak(s), last)
        return dataclasses.replace(stats, last_success=_s(s.last_success_ms))

    async def stats(self, subscription: str, window: float) -> Stats:
        return await self._run(lambda: self._stats(subscription, window))

    async def series(self, subscription: str, window: float, buckets: int) -> Sequence[Bucket]:
        return await self._run(lambda: self._series(subscription, window, buckets))

    async def attempts(self, subscription: str, *, failures_only: bool, limit: int) -> Sequence[Attempt]:
        query = AttemptQuery(outcome="failed" if failures_only else None, limit=limit)
        page = await self._run(lambda: self.store.attempts(subscription, query))
        return [attempt_of(r) for r in page.attempts]

    async def event(self, event_id: str) -> EventHistory | None:
        found = await self._run(lambda: self.store.event(event_id))
        if found is None:
            return None
        origin = found.origin
        return EventHistory(
            event_id=found.event_id,
            type=found.event_type or None,
            time=_s(found.event_time_ms),
            topic=None if origin is None else origin.topic,
            partition=None if origin is None else origin.partition,
            offset=None if origin is None else origin.offset,
            timelines=tuple(
                Timeline(
                    s.subscription,
                    tuple(attempt_of(r) for r in s.attempts),
                    s.state,
                    _s(s.until_ms) if s.state == "retry_pending" else None,
                )
                for s in found.subscriptions
            ),
        )
