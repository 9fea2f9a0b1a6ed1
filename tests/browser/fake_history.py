"""An in-memory ``HistoryQueries`` fed by the test: the records it adds are all the history there is.

It computes every answer from the records the way the contract in ``fanout.api.console.history``
says (windows back from now, newest-first attempts, failure streaks, nearest-rank percentiles), so
the pages can be tested against known numbers until the real history store is plugged in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fanout.api.console.history import (
    Attempt,
    Bucket,
    EventHistory,
    Failure,
    FinalState,
    Health,
    Stats,
    Timeline,
)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class EventInfo:
    type: str | None = None
    time: float | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass
class FakeHistory:
    records: list[Attempt] = field(default_factory=list)
    events: dict[str, EventInfo] = field(default_factory=dict)
    now: float | None = None

    def add(self, *records: Attempt) -> None:
        self.records.extend(records)

    def _now(self) -> float:
        return self.now if self.now is not None else time.time()

    def _of(self, subscription: str, window: float) -> list[Attempt]:
        since = self._now() - window
        return [r for r in self.records if r.subscription == subscription and r.at >= since]

    @staticmethod
    def _is_attempt(r: Attempt) -> bool:
        return r.status is not None or r.error is not None

    def _stats(self, records: list[Attempt]) -> Stats:
        attempts = sorted((r for r in records if self._is_attempt(r)), key=lambda r: r.at)
        delivered = [r for r in attempts if r.outcome == "delivered"]
        failed = [r for r in attempts if r.outcome != "delivered"]
        latencies = [r.latency_ms for r in attempts if r.latency_ms is not None]
        streak = 0
        for r in reversed(attempts):
            if r.outcome == "delivered":
                break
            streak += 1
        last_failed = failed[-1] if failed else None
        return Stats(
            attempts=len(attempts),
            delivered=len(delivered),
            failed=len(failed),
            dead_lettered=sum(r.outcome == "dead_lettered" for r in records),
            p50_ms=percentile(latencies, 0.50),
            p95_ms=percentile(latencies, 0.95),
            p99_ms=percentile(latencies, 0.99),
            last_success=delivered[-1].at if delivered else None,
            last_failure=Failure(last_failed.at, last_failed.status, last_failed.error)
            if last_failed
            else None,
            failure_streak=streak,
        )

    def _series(self, records: list[Attempt], window: float, buckets: int) -> tuple[Bucket, ...]:
        start = self._now() - window
        width = window / buckets
        counts = [[0, 0] for _ in range(buckets)]
        for r in records:
            if not self._is_attempt(r):
                continue
            i = min(buckets - 1, int((r.at - start) // width))
            counts[i][0 if r.outcome == "delivered" else 1] += 1
        return tuple(Bucket(start + i * width, ok, bad) for i, (ok, bad) in enumerate(counts))

    async def overview(self, window: float, buckets: int) -> Mapping[str, Health]:
        subscriptions = {r.subscription for r in self.records if r.at >= self._now() - window}
        out = {}
        for sub in sorted(subscriptions):
            records = self._of(sub, window)
            out[sub] = Health(self._stats(records), self._series(records, window, buckets))
        return out

    async def stats(self, subscription: str, window: float) -> Stats:
        return self._stats(self._of(subscription, window))

    async def series(self, subscription: str, window: float, buckets: int) -> Sequence[Bucket]:
        return self._series(self._of(subscription, window), window, buckets)

    async def attempts(self, subscription: str, *, failures_only: bool, limit: int) -> Sequence[Attempt]:
        mine = [r for r in self.records if r.subscription == subscription and (r.failed or not failures_only)]
        return sorted(mine, key=lambda r: r.at, reverse=True)[:limit]

    async def event(self, event_id: str) -> EventHistory | None:
        mine = sorted((r for r in self.records if r.event_id == event_id), key=lambda r: r.at)
        if not mine and event_id not in self.events:
            return None
        info = self.events.get(event_id, EventInfo())
        timelines = []
        for sub in dict.fromkeys(r.subscription for r in mine):
            records = tuple(r for r in mine if r.subscription == sub)
            last = records[-1]
            state: FinalState = {
                "delivered": "delivered",
                "retry": "retry_pending",
                "spilled": "retry_pending",
                "dead_lettered": "dead_lettered",
                "dropped": "dropped",
                "disabled": "disabled",
            }[last.outcome]  # type: ignore[assignment]
            until = last.not_before if state == "retry_pending" else None
            timelines.append(Timeline(sub, records, state, until))
        return EventHistory(
            event_id, info.type, info.time, info.topic, info.partition, info.offset, tuple(timelines)
        )
