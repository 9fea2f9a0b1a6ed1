"""Benchmark of the delivery-history index (issue 15's figures), without Kafka.

1. Ingest: realistic attempt records (1,000 subscriptions, ~90% delivered) encoded as the dispatcher
   writes them, fed to ``HistoryStore.ingest`` in the indexer's batch size: attempts/s, wall-clock and
   per CPU-second of the ingesting thread (the machine may be shared).
2. Overview and stats: an index of ``--overview-rows`` attempts (default 1M) spread over the last hour,
   built through the same ingest path; ``overview(1h)``, ``stats(1h)``, ``stats(24h)`` and a 24 h series
   timed (p50, p99).
3. Lookups at scale: ``--rows`` attempts (default 10M) spread over 7 days, generated straight into
   SQLite with the store's own row layout (rows first, then the indexes, as a bulk load does); event
   lookups and "a subscription's last 100 failures" timed (p50, p99) on random events and
   subscriptions, through ``HistoryStore``'s query path.
4. Disk per million attempts, for both indexes (files plus WAL).

Usage: ``.venv/bin/python scripts/bench_history.py [--rows N] [--overview-rows N] [--dir DIR] [--keep]``
(``--quick``: 1M rows and 200k overview rows). Prints a table, writes JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fanout.history import schema  # noqa: E402
from fanout.history.queries import AttemptQuery  # noqa: E402
from fanout.history.record import Outcome  # noqa: E402
from fanout.history.rows import CODE_OF, to_row  # noqa: E402
from fanout.history.store import HistoryStore  # noqa: E402

RESULTS = ROOT / "bench-results"
SUBSCRIPTIONS = 1000
BATCH = 20_000  # fanout.kafka.tail.BATCH
WEEK_MS = 7 * 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
OUTCOMES = (
    [Outcome.DELIVERED] * 900
    + [Outcome.RETRY_SCHEDULED] * 70
    + [Outcome.SPILLED] * 15
    + [Outcome.DEAD_LETTERED] * 10
    + [Outcome.DROPPED] * 3
    + [Outcome.DISABLED] * 2
)
TYPES = ["order.created", "order.paid", "order.shipped", "user.registered", "invoice.finalized"]
OK_BODY = '{"received":true}'
ERROR_BODY = "<html><head><title>503 Service Unavailable</title></head><body>" + "x" * 300 + "</body></html>"


def record(rng: random.Random, event_id: str, sub: str, time_ms: int) -> dict[str, Any]:
    """One attempt record as the dispatcher writes it (the schema's JSON object)."""
    outcome = rng.choice(OUTCOMES)
    attempted = outcome in (Outcome.DELIVERED, Outcome.RETRY_SCHEDULED) or (
        outcome is Outcome.DEAD_LETTERED and rng.random() < 0.8
    )
    ok = outcome is Outcome.DELIVERED
    status = 200 if ok else rng.choice([500, 502, 503, 429, 404])
    body = OK_BODY if ok else ERROR_BODY
    return {
        "version": 1,
        "event_id": event_id,
        "event_type": rng.choice(TYPES),
        "event_time_ms": time_ms - rng.randrange(50, 5000),
        "subscription": sub,
        "attempt": 1 if outcome is not Outcome.SPILLED else 0,
        "time_ms": time_ms,
        "outcome": outcome.value,
        "retry": {"tier": 1, "not_before_ms": time_ms + 30_000}
        if outcome in (Outcome.RETRY_SCHEDULED, Outcome.SPILLED)
        else None,
        "reason": {"dead_lettered": "retries exhausted", "spilled": "circuit open"}.get(outcome.value),
        "request": {
            "webhook_id": event_id,
            "webhook_timestamp": time_ms // 1000,
            "latency_ms": rng.lognormvariate(3.5, 0.8),
        }
        if attempted
        else None,
        "response": {
            "status": status,
            "content_type": "application/json" if ok else "text/html",
            "body": {"text": body, "encoding": "utf-8", "size": len(body), "truncated": False},
        }
        if attempted
        else None,
        "error": None if ok or not attempted else {"class": "HTTPStatus", "message": f"HTTP {status}"},
        "origin": {
            "topic": "orders",
            "partition": rng.randrange(12),
            "offset": rng.randrange(10**9),
            "timestamp_ms": time_ms - 100,
        },
        "trace_id": f"{rng.getrandbits(128):032x}",
        "member": f"fanout-dispatcher-{rng.randrange(8)}",
        "payload": None,
    }


def records(rng: random.Random, n: int, start_ms: int, span_ms: int) -> Iterator[dict[str, Any]]:
    """``n`` records in time order over ``span_ms``, 1-3 subscriptions per event."""
    i = 0
    while i < n:
        event_id = f"{rng.getrandbits(128):032x}"
        time_ms = start_ms + i * span_ms // n
        for _ in range(min(rng.choice((1, 1, 2, 3)), n - i)):
            yield record(rng, event_id, f"sub-{rng.randrange(SUBSCRIPTIONS):04d}", time_ms)
            i += 1


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "max_ms": round(samples[-1], 3),
    }


def disk(path: Path) -> int:
    return sum(
        path.with_name(path.name + s).stat().st_size
        for s in ("", "-wal")
        if path.with_name(path.name + s).exists()
    )


def ingest(path: Path, n: int, span_ms: int, seed: int) -> tuple[HistoryStore, dict[str, Any]]:
    """Build an index of ``n`` records ending now through ``HistoryStore.ingest``; time the ingest."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    store = HistoryStore(path, 8 * 24 * 3600)
    store.open()
    wall = cpu = 0.0
    done = 0
    batch: list[bytes] = []
    for r in records(rng, n, now - span_ms, span_ms):
        batch.append(orjson.dumps(r))
        if len(batch) == BATCH:
            w, c = time.perf_counter(), time.thread_time()
            store.ingest(batch, {("bench.attempts", 0): done + len(batch)})
            wall += time.perf_counter() - w
            cpu += time.thread_time() - c
            done += len(batch)
            batch = []
    if batch:
        store.ingest(batch, {("bench.attempts", 0): done + len(batch)})
        done += len(batch)
    return store, {
        "attempts": done,
        "per_second_wall": round(done / wall),
        "per_cpu_second": round(done / cpu),
        "cpu_us_per_attempt": round(cpu / done * 1e6, 1),
    }


def bulk(path: Path, n: int, seed: int) -> tuple[HistoryStore, list[str], dict[str, Any]]:
    """``n`` rows over the past 7 days written straight into the store's tables, indexes built after."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    store = HistoryStore(path, 8 * 24 * 3600)
    store.open()
    store.close()
    con = schema.connect(path)
    index_ddl = [s.strip() for s in schema.DDL.split(";") if s.strip().startswith("CREATE INDEX attempts_")]
    for ddl in index_ddl:
        con.execute("DROP INDEX " + ddl.split()[2])
    subs = {f"sub-{i:04d}": i + 1 for i in range(SUBSCRIPTIONS)}
    con.executemany("INSERT INTO names (id, name) VALUES (?, ?)", [(v, k) for k, v in subs.items()])
    sample: list[str] = []
    started = time.perf_counter()
    rows = []
    for i, r in enumerate(records(rng, n, now - WEEK_MS, WEEK_MS)):
        rows.append(to_row(r, subs[r["subscription"]], CODE_OF[r["outcome"]]))
        if rng.random() < 5000 / n:
            sample.append(r["event_id"])
        if len(rows) == 100_000:
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO attempts (event_key, sub, time_ms, outcome, failed, attempt, status, latency_us,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.execute("COMMIT")
            rows = []
            print(f"  bulk: {i + 1:,} rows", file=sys.stderr, end="\r")
    if rows:
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO attempts (event_key, sub, time_ms, outcome, failed, attempt, status, latency_us,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        con.execute("COMMIT")
    loaded = time.perf_counter()
    for ddl in index_ddl:
        con.execute(ddl)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    print(file=sys.stderr)
    store = HistoryStore(path, 8 * 24 * 3600)
    store.open()
    return (
        store,
        sample,
        {"rows_s": round(loaded - started, 1), "indexes_s": round(time.perf_counter() - loaded, 1)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="attempts in the lookup index")
    parser.add_argument("--overview-rows", type=int, default=1_000_000, help="attempts in the last hour")
    parser.add_argument("--ingest-rows", type=int, default=300_000, help="attempts for the ingest rate")
    parser.add_argument("--quick", action="store_true", help="1M lookup rows, 200k overview rows")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the index files go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the index files")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.overview_rows, args.ingest_rows = 1_000_000, 200_000, 100_000
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-history-", dir=args.dir))
    result: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        print(f"ingest: {args.ingest_rows:,} attempts through HistoryStore.ingest", file=sys.stderr)
        store, result["ingest"] = ingest(work / "ingest.sqlite", args.ingest_rows, HOUR_MS, seed=1)
        store.close()

        print(f"overview: {args.overview_rows:,} attempts in the last hour", file=sys.stderr)
        store, built = ingest(work / "overview.sqlite", args.overview_rows, HOUR_MS - 120_000, seed=2)
        rng = random.Random(3)
        subs = [f"sub-{i:04d}" for i in range(SUBSCRIPTIONS)]
        overview = store.overview(3600)
        result["overview"] = {
            "attempts": args.overview_rows,
            "subscriptions": len(overview),
            "ingest": built,
            "overview_1h": timed(lambda: store.overview(3600), 20),
            "stats_1h": timed(lambda: store.stats(rng.choice(subs), 3600), 200),
            "stats_24h": timed(lambda: store.stats(rng.choice(subs), 24 * 3600), 200),
            "series_24h_5min": timed(lambda: store.series(rng.choice(subs), 24 * 3600, 300), 200),
            "disk_bytes_per_million": round(disk(store.path) * 1_000_000 / args.overview_rows),
        }
        store.close()

        print(f"lookups: {args.rows:,} attempts over 7 days (bulk load)", file=sys.stderr)
        store, sample, load = bulk(work / "lookup.sqlite", args.rows, seed=4)
        found = [e for e in sample[:50] if store.event(e) is not None]
        assert len(found) == min(50, len(sample)), "sampled events must be found"
        rng = random.Random(5)
        failures = AttemptQuery(outcome="failed", limit=100)
        result["lookups"] = {
            "attempts": args.rows,
            "load": load,
            "event_lookup": timed(lambda: store.event(rng.choice(sample)), 2000),
            "last_100_failures": timed(lambda: store.attempts(rng.choice(subs), failures), 1000),
            "attempts_page_100": timed(
                lambda: store.attempts(rng.choice(subs), AttemptQuery(limit=100)), 1000
            ),
            "disk_bytes_per_million": round(disk(store.path) * 1_000_000 / args.rows),
        }
        store.close()
    finally:
        result["load_after"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"history-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    i, o, lk = result["ingest"], result["overview"], result["lookups"]
    print(
        f"ingest                 {i['per_second_wall']:>9,}/s wall  {i['per_cpu_second']:>9,}/CPU-s  (target >= 30,000/s)"
    )
    print(
        f"overview 1h            p50 {o['overview_1h']['p50_ms']:>8} ms  p99 {o['overview_1h']['p99_ms']:>8} ms  ({o['attempts']:,} attempts, {o['subscriptions']} subscriptions; target < 300 ms)"
    )
    print(
        f"stats 1h / 24h         p99 {o['stats_1h']['p99_ms']} ms / {o['stats_24h']['p99_ms']} ms; series 24h p99 {o['series_24h_5min']['p99_ms']} ms"
    )
    print(
        f"event lookup           p50 {lk['event_lookup']['p50_ms']:>8} ms  p99 {lk['event_lookup']['p99_ms']:>8} ms  ({lk['attempts']:,} attempts; target p99 < 10 ms)"
    )
    print(
        f"last 100 failures      p50 {lk['last_100_failures']['p50_ms']:>8} ms  p99 {lk['last_100_failures']['p99_ms']:>8} ms  (target p99 < 50 ms)"
    )
    print(
        f"disk per 1M attempts   {lk['disk_bytes_per_million'] / 1e6:.0f} MB (bulk-loaded)  {o['disk_bytes_per_million'] / 1e6:.0f} MB (ingested, with rollups)"
    )
    print(
        f"load average           {result['load_before']} -> {result['load_after']} on {result['cpus']} CPUs; JSON: {out}"
    )


if __name__ == "__main__":
    main()
