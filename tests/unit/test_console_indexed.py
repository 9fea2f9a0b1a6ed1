"""The console's history queries over a real history index (``fanout.api.console.indexed``): the
numbers the pages show are the store's, an event's timeline holds each attempt, a failing streak is
found, sparklines cover the window, and a slow query becomes a 503."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.api.console.indexed import IndexedHistory
from fanout.api.console.overview import FAILING_STREAK, rows, state_of, table, with_detail
from fanout.api.problems import Problem
from fanout.history.codec import encode
from fanout.history.record import Body, Failure, Outcome, Response, Retry
from fanout.history.stats import OverviewRow
from fanout.history.store import HistoryStore, QueryTimeout
from tests.history_records import T0, make

NOW_MS = T0 + 3_000_000
HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore(tmp_path / "history.sqlite", 7 * 86400, clock=lambda: NOW_MS / 1000)
    s.open()
    records = [
        make(Outcome.RETRY_SCHEDULED, "evt-42", "crm", NOW_MS - 30_000, 1, 503, latency_ms=80.0),
        make(Outcome.DELIVERED, "evt-42", "crm", NOW_MS - 25_000, 2, 204, latency_ms=12.0),
        *(
            make(
                Outcome.DELIVERED,
                f"ok-{i}",
                "crm",
                NOW_MS - 3_000_000 + i * 60_000,
                1,
                200,
                latency_ms=10.0 + i,
            )
            for i in range(40)
        ),
        make(Outcome.DELIVERED, "old", "crm", NOW_MS - 2 * 3_600_000, 1, 200),  # outside the hour
        make(Outcome.DELIVERED, "d-0", "down", NOW_MS - 900_000, 1, 200),
        *(
            make(
                Outcome.RETRY_SCHEDULED,
                f"d-{i}",
                "down",
                NOW_MS - 600_000 + i * 60_000,
                1,
                None,
                request=make(Outcome.DELIVERED).request,
                response=None,
                error=Failure("ConnectError", "refused"),
                retry=Retry(0, NOW_MS),
            )
            for i in range(1, 5)
        ),
        make(Outcome.DISABLED, "x-1", "paused", NOW_MS - 60_000, 0),
        make(
            Outcome.DEAD_LETTERED,
            "bin-1",
            "binary",
            NOW_MS - 120_000,
            3,
            500,
            response=Response(500, None, Body.of(b"\xff\xfe\x00", 64)),
        ),
    ]
    s.ingest([encode(r) for r in records], {("t.attempts", 0): len(records)})
    yield s
    s.close()


async def test_an_event_retried_once_shows_both_attempts_and_its_state(store: HistoryStore) -> None:
    found = await IndexedHistory(store).event("evt-42")
    assert found is not None and found.type == "order.created" and found.topic == "orders"
    [timeline] = found.timelines
    assert timeline.subscription == "crm" and timeline.state == "delivered" and timeline.until is None
    first, second = timeline.attempts
    assert (first.attempt, first.outcome, first.status, first.latency_ms) == (1, "retry", 503, 80.0)
    assert first.response == "nope" and first.error is None and first.not_before is not None
    assert (second.attempt, second.outcome, second.status) == (2, "delivered", 204)
    assert await IndexedHistory(store).event("evt-unknown") is None


async def test_the_overview_equals_the_stores_stats_and_finds_the_failing_one(store: HistoryStore) -> None:
    history = IndexedHistory(store)
    overview = await history.overview(HOUR)
    assert set(overview) == {"crm", "down", "paused", "binary"}
    for sub, health in overview.items():
        totals = store.stats(sub, HOUR).totals
        assert health.stats.attempts == totals.attempted
        assert health.stats.delivered == totals.counts["delivered"]
        assert health.stats.dead_lettered == totals.counts["dead_lettered"]
        assert health.stats.p99_ms == totals.percentiles()["p99"]
        assert (await history.stats(sub, HOUR)).attempts == health.stats.attempts
    assert overview["crm"].stats.attempts == 42 and overview["crm"].stats.failed == 1
    assert overview["down"].stats.failure_streak == FAILING_STREAK  # enough to tell: the latest 3 failed
    assert state_of(True, overview["down"].stats) == "failing"
    assert (await history.stats("down", HOUR)).failure_streak == 4  # the store's whole streak
    assert overview["crm"].stats.failure_streak == 0
    assert overview["paused"].stats.attempts == 0 and overview["paused"].stats.failure_streak == 1
    assert overview["binary"].stats.dead_lettered == 1

    subs = [{"id": s, "enabled": True} for s in ("binary", "crm", "down", "paused", "quiet")]
    result = table(rows(subs, overview))
    assert overview["down"].stats.last_failure is not None
    assert overview["down"].stats.last_failure.error is None  # not read for the whole table
    detail = await history.detail({r.id: r.stats for r in result.rows}, HOUR, 6)
    shown = {r.id: r for r in with_detail(result, detail).rows}
    assert shown["down"].last_failure is not None and shown["down"].last_failure.error == "ConnectError"
    assert shown["binary"].last_failure is not None and shown["binary"].last_failure.status == 500
    for sub in ("crm", "down"):
        series = shown[sub].series
        assert len(series) == 6 and sum(b.total for b in series) == shown[sub].stats.attempts
    assert [b.total for b in shown["quiet"].series] == [0] * 6 and shown["quiet"].stats.attempts == 0


async def test_recent_attempts_failures_only_and_a_body_that_is_not_text(store: HistoryStore) -> None:
    history = IndexedHistory(store)
    latest = await history.attempts("crm", failures_only=False, limit=5)
    assert [a.event_id for a in latest[:2]] == ["evt-42", "evt-42"] and len(latest) == 5
    assert [a.outcome for a in await history.attempts("crm", failures_only=True, limit=50)] == ["retry"]
    [dead] = await history.attempts("binary", failures_only=False, limit=5)
    assert dead.outcome == "dead_lettered" and dead.response == "[3 bytes, not UTF-8]"
    assert dead.reason == "retries exhausted"
    stats = await history.stats("down", 86400)
    assert stats.last_failure is not None and stats.last_failure.error == "ConnectError"
    assert stats.last_success == (NOW_MS - 900_000) / 1000


async def test_a_query_the_store_interrupts_is_a_503(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: object) -> None:
        raise QueryTimeout("the history query took longer than 5s")

    monkeypatch.setattr(store, "overview", slow)
    with pytest.raises(Problem) as raised:
        await IndexedHistory(store).overview(HOUR)
    assert raised.value.status == 503


async def test_the_overview_is_reused_for_max_age_only(store: HistoryStore) -> None:
    calls = []
    real = store.overview

    def counted(window_s: float = 3600, with_latency: bool = True) -> list[OverviewRow]:
        calls.append(window_s)
        return real(window_s, with_latency)

    store.overview = counted  # type: ignore[method-assign]
    reused = IndexedHistory(store, max_age=3600)
    first = await reused.overview(HOUR)
    assert await reused.overview(HOUR) is first and len(calls) == 1
    assert await reused.overview(HOUR, with_latency=False) is first  # an answer with latency serves both
    await reused.overview(2 * HOUR)  # another window is another answer
    assert len(calls) == 2
    counts = await reused.overview(HOUR, with_latency=False)
    assert await reused.overview(HOUR, with_latency=False) is counts and len(calls) == 3
    assert await reused.overview(HOUR) is not counts and len(calls) == 4  # one without cannot serve
    fresh = IndexedHistory(store, max_age=0)
    await fresh.overview(HOUR)
    await fresh.overview(HOUR)
    assert len(calls) == 6


async def test_without_latency_the_overview_leaves_it_to_the_rows_shown(store: HistoryStore) -> None:
    history = IndexedHistory(store)
    counts = await history.overview(HOUR, with_latency=False)
    full = await IndexedHistory(store).overview(HOUR)
    assert set(counts) == set(full)
    for sub, health in counts.items():
        assert health.stats.p99_ms is None and health.stats.p50_ms is None
        assert dataclasses.replace(
            health.stats, p50_ms=None, p95_ms=None, p99_ms=None
        ) == dataclasses.replace(full[sub].stats, p50_ms=None, p95_ms=None, p99_ms=None)
    detail = await history.detail({sub: h.stats for sub, h in counts.items()}, HOUR, 6)
    for sub in counts:
        totals = store.stats(sub, HOUR).totals  # what GET /v1/subscriptions/{id}/stats answers
        p = totals.percentiles()
        shown = detail[sub].stats
        assert (shown.p50_ms, shown.p95_ms, shown.p99_ms) == (p["p50"], p["p95"], p["p99"])
        assert (shown.p50_ms, shown.p95_ms, shown.p99_ms) == (
            full[sub].stats.p50_ms,
            full[sub].stats.p95_ms,
            full[sub].stats.p99_ms,
        )
    assert detail["crm"].stats.p99_ms is not None and detail["paused"].stats.p99_ms is None
