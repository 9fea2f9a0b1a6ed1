"""The history index: ingest with its offsets in one transaction, resume, rebuild of a bad file,
retention, and every query (cursor paging checked as a property)."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.history import queries, rollup, rows, stats
from fanout.history import store as store_module
from fanout.history.codec import decode, encode
from fanout.history.queries import AttemptQuery, InvalidCursor
from fanout.history.record import AttemptRecord, Body, Outcome
from fanout.history.schema import IndexCorrupt
from fanout.history.store import HistoryStore, QueryTimeout
from tests import history_records
from tests.history_records import T0, make

TOPIC = "t.attempts"
DAY = 24 * 3600


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 60_000)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[HistoryStore]:
    s = HistoryStore(tmp_path / "index" / "history.sqlite", 7 * DAY, clock=clock)
    assert s.open() is True
    yield s
    s.close()


def ingest(s: HistoryStore, records: Iterable[AttemptRecord], partition: int = 0) -> int:
    values = [encode(r) for r in records]
    start = s.positions().get((TOPIC, partition), 0)
    s.ingest(values, {(TOPIC, partition): start + len(values)})
    return start + len(values)


# -- ingest, offsets, resume ---------------------------------------------------------------------------


def test_rows_and_offsets_are_written_together_and_a_restart_resumes_there(
    tmp_path: Path, store: HistoryStore, clock: Clock
) -> None:
    ingest(store, [make(event_id="a"), make(event_id="b")], partition=0)
    ingest(store, [make(event_id="c")], partition=2)
    store.close()
    again = HistoryStore(store.path, 7 * DAY, clock=clock)
    assert again.open() is False
    assert again.positions() == {(TOPIC, 0): 2, (TOPIC, 2): 1}
    assert again.event("a") is not None and again.event("c") is not None
    again.close()


def test_a_batch_that_fails_writes_neither_its_rows_nor_its_offsets(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(store, [make(event_id="before")])
    real = store_module.to_row
    calls = 0

    def failing(*args: object) -> rows.Row:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk on fire")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module, "to_row", failing)
    values = [encode(make(event_id=f"e{i}", subscription=f"new-{i}")) for i in range(5)]
    with pytest.raises(RuntimeError):
        store.ingest(values, {(TOPIC, 0): 6})
    assert store.positions() == {(TOPIC, 0): 1}
    assert store.event("e0") is None
    monkeypatch.setattr(store_module, "to_row", real)
    store.ingest(values, {(TOPIC, 0): 6})  # the names it had interned in the failed batch are gone too
    assert store.event("e0") is not None and store.positions() == {(TOPIC, 0): 6}
    assert store.attempts("new-0", AttemptQuery()).attempts[0].event_id == "e0"


def test_values_that_are_not_records_are_skipped_counted_and_their_offsets_move_on(
    store: HistoryStore,
) -> None:
    result = store.ingest([b"garbage", None, encode(make()), b'{"version": 9}'], {(TOPIC, 0): 4})
    assert (result.indexed, result.skipped) == (1, 3)
    assert store.skipped == 3 and store.last_skip.startswith("version")
    assert store.positions() == {(TOPIC, 0): 4}


# -- bad files -----------------------------------------------------------------------------------------


def test_a_missing_file_starts_an_empty_index(tmp_path: Path) -> None:
    s = HistoryStore(tmp_path / "a" / "b" / "h.sqlite", DAY)
    assert s.open() is True and s.positions() == {}
    s.close()


def _corrupt_pages(path: Path, keep_first: bool = True) -> None:
    data = bytearray(path.read_bytes())
    start = 4096 if keep_first else 100
    for i in range(start, len(data)):
        data[i] = (i * 7919) & 0xFF
    path.write_bytes(bytes(data))


def test_a_file_that_is_not_a_database_is_moved_aside_and_the_index_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"not a database " * 500)
    s = HistoryStore(path, DAY)
    assert s.open() is True
    assert path.with_name("h.sqlite.bad").read_bytes().startswith(b"not a database")
    ingest(s, [make()])
    assert s.event("evt-1") is not None
    s.close()


def test_a_corrupt_index_is_moved_aside_at_open(tmp_path: Path, clock: Clock) -> None:
    s = HistoryStore(tmp_path / "h.sqlite", DAY, clock=clock)
    s.open()
    ingest(s, [make(event_id=f"e{i}", subscription=f"s{i % 7}") for i in range(3000)])
    s.close()
    _corrupt_pages(s.path)
    again = HistoryStore(s.path, DAY, clock=clock)
    assert again.open() is True
    assert again.positions() == {} and again.event("e1") is None
    assert s.path.with_name("h.sqlite.bad").exists()
    again.close()


def test_corruption_a_query_finds_asks_the_indexer_to_rebuild(tmp_path: Path, clock: Clock) -> None:
    s = HistoryStore(tmp_path / "h.sqlite", DAY, clock=clock)
    s.open()
    ingest(s, [make(event_id=f"e{i}", subscription=f"s{i % 7}") for i in range(3000)])
    s.close()  # checkpoints the WAL into the file
    s.open()
    _corrupt_pages(s.path)
    with pytest.raises(IndexCorrupt):
        for i in range(3000):
            s.event(f"e{i}")
    assert s.needs_rebuild
    s.rebuild("test")
    assert not s.needs_rebuild and s.rebuilds == 1 and s.positions() == {}
    assert s.event("e1") is None  # readers moved to the new file
    ingest(s, [make(event_id="fresh")])
    assert s.event("fresh") is not None
    s.close()


@pytest.mark.parametrize("pragma", ["PRAGMA user_version=99", "PRAGMA application_id=7"])
def test_an_index_of_another_version_or_application_is_moved_aside(tmp_path: Path, pragma: str) -> None:
    path = tmp_path / "h.sqlite"
    s = HistoryStore(path, DAY)
    s.open()
    ingest(s, [make()])
    s.close()
    con = sqlite3.connect(path)
    con.execute(pragma)
    con.close()
    again = HistoryStore(path, DAY)
    assert again.open() is True and again.event("evt-1") is None
    again.close()


def test_another_applications_database_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE theirs (x)")
    con.close()
    s = HistoryStore(path, DAY)
    assert s.open() is True
    s.close()


# -- retention -----------------------------------------------------------------------------------------


def test_rows_past_the_retention_are_pruned_in_bounded_steps(store: HistoryStore, clock: Clock) -> None:
    old = [make(event_id=f"old{i}", subscription=f"s{i % 4}", time_ms=T0 - 8 * DAY * 1000) for i in range(20)]
    young = [make(event_id=f"young{i}", subscription=f"s{i % 4}", time_ms=T0) for i in range(8)]
    ingest(store, old + young)
    deleted = [store.prune(budget=3) for _ in range(10)]
    assert deleted[:6] == [3, 3, 3, 3, 3, 3] and deleted[6] == 2 and sum(deleted) == 20
    assert store.event("old3") is None and store.event("young3") is not None
    for sub in ("s0", "s1", "s2", "s3"):
        page = store.attempts(sub, AttemptQuery(limit=100)).attempts
        assert [r.event_id.startswith("young") for r in page] == [True, True]
    con = sqlite3.connect(store.path)
    blocks = set(con.execute("SELECT span, minute FROM rollup"))
    con.close()
    assert blocks == {(1, T0 // 60_000), (10, T0 // 60_000 // 10 * 10)}


# -- the event ------------------------------------------------------------------------------------------


def test_an_event_shows_each_subscriptions_attempts_in_order_and_its_state(store: HistoryStore) -> None:
    payload = Body.of(b'{"event":"order.created"}', 100)
    ingest(
        store,
        [
            make(Outcome.RETRY_SCHEDULED, subscription="a", time_ms=T0, attempt=1, payload=payload),
            make(Outcome.SPILLED, subscription="b", time_ms=T0, attempt=0),
            make(Outcome.DELIVERED, subscription="a", time_ms=T0 + 6000, attempt=2),
            make(Outcome.DEAD_LETTERED, subscription="c", time_ms=T0, status=400),
            make(Outcome.DROPPED, subscription="d", time_ms=T0, attempt=0),
            make(Outcome.DISABLED, subscription="e", time_ms=T0, attempt=0),
            make(Outcome.DELIVERED, event_id="other", subscription="a"),
        ],
    )
    event = store.event("evt-1")
    assert event is not None
    assert (event.event_type, event.event_time_ms, event.payload) == ("order.created", T0 - 1000, payload)
    assert event.origin is not None and (event.origin.topic, event.origin.offset) == ("orders", 42)
    states = {
        s.subscription: (s.state, s.until_ms, [r.attempt for r in s.attempts]) for s in event.subscriptions
    }
    assert states == {
        "a": ("delivered", None, [1, 2]),
        "b": ("retry_pending", T0 + 5000, [0]),
        "c": ("dead_lettered", None, [1]),
        "d": ("dropped", None, [0]),
        "e": ("disabled", None, [0]),
    }
    a = event.subscriptions[0]
    assert a.attempts[0].response is not None and a.attempts[0].response.status == 503
    assert store.event("nope") is None


def test_events_whose_ids_hash_alike_are_kept_apart(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "event_key", lambda event_id: 7)
    monkeypatch.setattr(queries, "event_key", lambda event_id: 7)
    ingest(store, [make(event_id="x", subscription="s1"), make(event_id="y", subscription="s2")])
    x = store.event("x")
    assert x is not None and [s.subscription for s in x.subscriptions] == ["s1"]


# -- a subscription's attempts -------------------------------------------------------------------------


def _sample(store: HistoryStore) -> None:
    ingest(
        store,
        [
            make(Outcome.DELIVERED, event_id="e1", time_ms=T0),
            make(Outcome.RETRY_SCHEDULED, event_id="e2", time_ms=T0 + 1000, status=503),
            make(Outcome.RETRY_SCHEDULED, event_id="e3", time_ms=T0 + 2000, status=429),
            make(Outcome.SPILLED, event_id="e4", time_ms=T0 + 3000, attempt=0),
            make(Outcome.DEAD_LETTERED, event_id="e5", time_ms=T0 + 4000, status=503),
            make(Outcome.DELIVERED, event_id="e6", time_ms=T0 + 5000),
            make(Outcome.DELIVERED, event_id="x", subscription="other", time_ms=T0 + 6000),
        ],
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (AttemptQuery(), ["e6", "e5", "e4", "e3", "e2", "e1"]),
        (AttemptQuery(outcome="failed"), ["e5", "e3", "e2"]),
        (AttemptQuery(outcome=Outcome.DELIVERED), ["e6", "e1"]),
        (AttemptQuery(outcome=Outcome.SPILLED), ["e4"]),
        (AttemptQuery(status=503), ["e5", "e2"]),
        (AttemptQuery(since_ms=T0 + 2000), ["e6", "e5", "e4", "e3"]),
        (AttemptQuery(until_ms=T0 + 2000), ["e2", "e1"]),
        (AttemptQuery(outcome="failed", since_ms=T0 + 1500, until_ms=T0 + 4500), ["e5", "e3"]),
        (AttemptQuery(limit=2), ["e6", "e5"]),
    ],
)
def test_attempts_filter_by_outcome_status_and_time(
    store: HistoryStore, query: AttemptQuery, expected: list[str]
) -> None:
    _sample(store)
    assert [r.event_id for r in store.attempts("hook-1", query).attempts] == expected


def test_an_unknown_subscription_has_no_attempts(store: HistoryStore) -> None:
    _sample(store)
    assert store.attempts("nobody", AttemptQuery()).attempts == ()


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "WzIsMSwxXQ", "WzEsLTEsMV0", "x" * 200])
def test_a_cursor_it_did_not_make_is_refused(store: HistoryStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        queries.decode_cursor(cursor)


def test_limits_are_bounded() -> None:
    with pytest.raises(ValueError):
        AttemptQuery(limit=0)
    with pytest.raises(ValueError):
        AttemptQuery(limit=queries.MAX_LIMIT + 1)


def _pages(store: HistoryStore, sub: str, query: AttemptQuery) -> Iterator[list[AttemptRecord]]:
    cursor = None
    for _ in range(10_000):
        page = store.attempts(sub, dataclasses.replace(query, cursor=cursor))
        yield list(page.attempts)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from(list(Outcome))), min_size=0, max_size=60),
    st.integers(1, 7),
    st.sampled_from([None, "failed", Outcome.DELIVERED]),
)
def test_paging_returns_every_row_once_newest_first(
    rows_: list[tuple[int, Outcome]], limit: int, outcome: Outcome | str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = HistoryStore(Path(tmp) / "h.sqlite", DAY, clock=Clock(T0))
        s.open()
        records = [make(o, event_id=f"e{i}", time_ms=T0 + t) for i, (t, o) in enumerate(rows_)]
        ingest(s, records)
        kept = [
            (r.time_ms, i, r.event_id)
            for i, r in enumerate(records)
            if outcome is None or (r.failed if outcome == "failed" else r.outcome == outcome)
        ]
        expected = [e for _, _, e in sorted(kept, reverse=True)]
        pages = list(_pages(s, "hook-1", AttemptQuery(outcome=outcome, limit=limit)))  # type: ignore[arg-type]
        s.close()
    assert [r.event_id for page in pages for r in page] == expected
    assert all(len(p) == limit for p in pages[:-1]) and len(pages[-1]) <= limit


def test_rows_inserted_between_pages_neither_repeat_nor_push_out_others(store: HistoryStore) -> None:
    ingest(store, [make(event_id=f"e{i}", time_ms=T0 + (i // 3) * 1000) for i in range(30)])
    before = {f"e{i}" for i in range(30)}
    first = store.attempts("hook-1", AttemptQuery(limit=7))
    ingest(store, [make(event_id=f"n{i}", time_ms=T0 + i * 700) for i in range(20)])
    seen = [r.event_id for r in first.attempts]
    cursor = first.next_cursor
    while cursor is not None:
        page = store.attempts("hook-1", AttemptQuery(limit=7, cursor=cursor))
        seen += [r.event_id for r in page.attempts]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


# -- stats, series, overview ---------------------------------------------------------------------------


def test_stats_count_outcomes_rate_latency_last_success_failure_and_streak(
    store: HistoryStore, clock: Clock
) -> None:
    latencies = [float(i) for i in range(1, 101)]
    records = [make(event_id=f"ok{i}", time_ms=T0 + i, latency_ms=ms) for i, ms in enumerate(latencies)]
    records += [
        make(Outcome.RETRY_SCHEDULED, event_id=f"f{i}", time_ms=T0 + 200 + i, status=500) for i in range(3)
    ]
    records += [make(Outcome.SPILLED, event_id="sp", time_ms=T0 + 300, attempt=0)]
    ingest(store, records)
    s = store.stats("hook-1", 3600)
    t = s.totals
    assert t.counts["delivered"] == 100 and t.counts["retry_scheduled"] == 3 and t.counts["spilled"] == 1
    assert t.attempted == 103 and t.failed == 3
    assert t.success_rate == round(100 / 103, 6)
    p = t.percentiles()
    for key, exact in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        assert p[key] is not None and abs(p[key] - exact) <= exact * 0.06, (key, p[key])
    assert s.last_success_ms == T0 + 99 and s.last_failure_ms == T0 + 202
    assert s.streak == stats.Streak(3, T0 + 200, T0 + 202, ongoing=True, capped=False)
    ingest(store, [make(event_id="back", time_ms=T0 + 400)])
    after = store.stats("hook-1", 3600)
    assert after.streak is not None and after.streak.failures == 3 and not after.streak.ongoing


def test_a_streak_longer_than_the_cap_says_so(store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "STREAK_CAP", 5)
    ingest(
        store, [make(Outcome.DEAD_LETTERED, event_id=f"f{i}", time_ms=T0 + i, status=500) for i in range(9)]
    )
    streak = store.stats("hook-1", 3600).streak
    assert streak is not None and (streak.failures, streak.capped, streak.first_ms) == (5, True, T0)


def test_stats_cover_the_window_only(store: HistoryStore, clock: Clock) -> None:
    ingest(store, [make(event_id="old", time_ms=T0 - 2 * 3600_000), make(event_id="new", time_ms=T0)])
    assert store.stats("hook-1", 3600).totals.counts["delivered"] == 1
    assert store.stats("hook-1", 3 * 3600).totals.counts["delivered"] == 2
    empty = store.stats("nobody", 3600)
    assert empty.totals.attempted == 0 and empty.totals.success_rate is None and empty.streak is None


def test_a_series_has_one_point_per_step_adding_up_to_the_stats(store: HistoryStore, clock: Clock) -> None:
    clock.now_ms = T0 + 3600_000
    ingest(store, [make(event_id=f"e{i}", time_ms=T0 + i * 60_000) for i in range(60)])
    points = store.series("hook-1", 3600, 300)
    assert len(points) in (12, 13)
    counted = store.series("hook-1", 3600, 300, with_latency=False)
    assert [(p.start_ms, p.totals.counts, p.totals.attempted) for p in counted] == [
        (p.start_ms, p.totals.counts, p.totals.attempted) for p in points
    ]
    assert any(p.totals.latency for p in points) and not any(p.totals.latency for p in counted)
    assert all(p.start_ms % 300_000 == 0 for p in points)
    assert (
        sum(p.totals.counts["delivered"] for p in points)
        == store.stats("hook-1", 3600).totals.counts["delivered"]
    )
    with pytest.raises(ValueError):
        store.series("hook-1", 3600, 90)
    with pytest.raises(ValueError):
        store.series("hook-1", 30 * DAY, 60)


def test_the_overview_lists_every_subscription_active_in_the_window(store: HistoryStore) -> None:
    ingest(
        store,
        [make(event_id=f"a{i}", subscription="a", latency_ms=10) for i in range(10)]
        + [make(Outcome.DEAD_LETTERED, event_id="b1", subscription="b", status=500)]
        + [make(event_id="c1", subscription="c", time_ms=T0 - 2 * 3600_000)],
    )
    rows_ = {r.subscription: r.totals for r in store.overview(3600)}
    assert set(rows_) == {"a", "b"}
    assert rows_["a"].attempted == 10 and rows_["a"].success_rate == 1.0
    assert rows_["a"].percentiles()["p99"] == pytest.approx(10, rel=0.06)
    assert rows_["b"].counts["dead_lettered"] == 1 and rows_["b"].last_failure_ms == T0


def test_a_query_past_its_deadline_is_interrupted(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sample(store)
    monkeypatch.setattr(store_module, "PROGRESS_STEPS", 1)
    store.query_timeout = -1
    with pytest.raises(QueryTimeout):
        store.attempts("hook-1", AttemptQuery())
    assert not store.needs_rebuild


def test_a_decoder_defect_skips_the_value_instead_of_stopping_the_index(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store_module.checked

    def flaky(value: bytes | None) -> dict[str, object]:
        if value == b"trigger":
            raise TypeError("a bug")
        return real(value)

    monkeypatch.setattr(store_module, "checked", flaky)
    result = store.ingest([b"trigger", encode(make())], {(TOPIC, 0): 2})
    assert (result.indexed, result.skipped) == (1, 1) and "a bug" in store.last_skip
    assert store.positions() == {(TOPIC, 0): 2}


@given(st.integers(0, 10_000), st.integers(0, 500))
def test_the_rollup_blocks_a_window_reads_tile_its_minutes_exactly(first: int, length: int) -> None:
    last = first + length
    minutes: list[int] = []
    for span, lo, hi in rollup.cover(first, last):
        assert lo % span == 0 and hi % span == 0
        for start in range(lo, hi + 1, span):
            minutes += range(start, start + span)
    assert sorted(minutes) == list(range(first, last + 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 180), st.sampled_from(list(Outcome))), max_size=80),
    st.integers(1, 180),
    st.integers(0, 60),
)
def test_stats_and_overview_count_exactly_the_records_in_the_window(
    records_: list[tuple[int, Outcome]], window_min: int, now_min: int
) -> None:
    base = T0 // 60_000 * 60_000
    clock = Clock(base + (120 + now_min) * 60_000 + 30_000)
    with tempfile.TemporaryDirectory() as tmp:
        s = HistoryStore(Path(tmp) / "h.sqlite", DAY, clock=clock)
        s.open()
        ingest(
            s, [make(o, event_id=f"e{i}", time_ms=base + m * 60_000 + i) for i, (m, o) in enumerate(records_)]
        )
        got = s.stats("hook-1", window_min * 60).totals
        overview = {r.subscription: r.totals for r in s.overview(window_min * 60)}
        counts = {r.subscription: r.totals for r in s.overview(window_min * 60, with_latency=False)}
        hists = s.latencies(["hook-1", "nobody"], window_min * 60)
        s.close()
    since_minute = (clock.now_ms - window_min * 60_000) // 60_000
    now_minute = clock.now_ms // 60_000
    inside = [o for m, o in records_ if since_minute <= (base // 60_000 + m) <= now_minute]
    assert got.counts == {o: inside.count(o) for o in Outcome}
    assert set(overview) == ({"hook-1"} if inside else set())
    assert hists == {"hook-1": got.latency, "nobody": {}}
    assert set(counts) == set(overview)
    if inside:
        assert overview["hook-1"].counts == got.counts and overview["hook-1"].latency == got.latency
        c = counts["hook-1"]  # the same totals, summed in SQL, without the latency histogram
        assert (c.counts, c.attempted, c.failed, c.last_success_ms, c.last_failure_ms, c.latency) == (
            got.counts,
            got.attempted,
            got.failed,
            got.last_success_ms,
            got.last_failure_ms,
            {},
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(history_records.records, min_size=1, max_size=8))
def test_the_index_gives_back_exactly_the_records_it_was_given(given_records: list[AttemptRecord]) -> None:
    given_records = [  # as written, the webhook-id is the event id; the index stores it once then
        dataclasses.replace(r, request=dataclasses.replace(r.request, webhook_id=r.event_id))
        if r.request is not None and i % 2 == 0
        else r
        for i, r in enumerate(given_records)
    ]
    expected = [decode(encode(r)) for r in given_records]  # what the topic holds: bounded strings
    with tempfile.TemporaryDirectory() as tmp:
        s = HistoryStore(Path(tmp) / "h.sqlite", DAY, clock=Clock(T0))
        s.open()
        ingest(s, given_records)
        back = []
        for sub in {r.subscription for r in expected}:
            back += s.attempts(sub, AttemptQuery(limit=100)).attempts
        events = {r.event_id: s.event(r.event_id) for r in expected}
        s.close()
    key = repr
    assert sorted(back, key=key) == sorted(expected, key=key)
    for event_id, history in events.items():
        assert history is not None
        assert sorted((a for sub in history.subscriptions for a in sub.attempts), key=key) == sorted(
            (r for r in expected if r.event_id == event_id), key=key
        )
