"""The benchmark's ``history`` scenario (issue 15's figures, in one run of scripts/bench).

1. Scenario (a), one worker, with ``history.record: off`` and ``all`` alternately (``--history-rounds``
   rounds of the pair, each run a fresh consumer group over the same pre-produced events, so the
   machine's drift touches both alike): deliveries/s and CPU per delivery, and their ratios (the median
   of ``all`` over the median of ``off``; target >= 0.9x).
2. The attempts topic those ``all`` runs wrote: records, the values' bytes per million attempts (before
   the producer's lz4 compression: an upper bound of the topic's disk).
3. The index (scripts/bench_history.py, in a subprocess): ingest attempts/s, event lookup and "last 100
   failures" at ``--history-rows`` attempts, disk per million attempts.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent


def attempts_topic_bytes(settings: Any, topic: str) -> tuple[int, int]:
    """(records, bytes of their keys and values) of ``topic``, read to its end."""
    consumer = Consumer(
        {**settings.kafka.librdkafka(), "group.id": f"bench-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in ends.items()])
        left = sum(hi - lo for lo, hi in ends.values())
        records = size = 0
        while records < left:
            batch = consumer.consume(10_000, 5.0)
            if not batch:
                break
            for msg in batch:
                if msg.error() is None:
                    records += 1
                    size += len(msg.value() or b"") + len(msg.key() or b"")
        return records, size
    finally:
        consumer.close()


def run_history_scenario(bench: Any, sink: Any, scenario: Any) -> dict[str, Any]:
    from bench import env_for, load_settings_from

    args = bench.args
    prefix, _ = bench.prepare(scenario, sink.url)
    runs: dict[str, list[Any]] = {"off": [], "all": []}
    for _ in range(args.history_rounds):
        for mode in ("off", "all"):
            run = bench.dispatch(scenario, prefix, 1, sink, history=mode)
            runs[mode].append(run)
            print(f"  (a) history.record={mode}: {run.per_second:.0f}/s", flush=True)
    off = statistics.median(r.per_second for r in runs["off"])
    all_ = statistics.median(r.per_second for r in runs["all"])
    cpu_off = statistics.median(r.cpu_per_1000 for r in runs["off"])
    cpu_all = statistics.median(r.cpu_per_1000 for r in runs["all"])
    settings = load_settings_from(env_for(prefix, "unused"))
    records, size = attempts_topic_bytes(settings, settings.topics.attempts)
    out = ROOT / "bench-results" / f"history-index-{bench.run_id}.json"
    print(f"  history index: {args.history_rows:,} attempts (scripts/bench_history.py)", flush=True)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_history.py"), "--rows", str(args.history_rows),
         "--out", str(out)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    index = orjson.loads(out.read_bytes())
    return {
        "runs": {mode: [asdict(r) for r in rs] for mode, rs in runs.items()},
        "off_per_second": off,
        "all_per_second": all_,
        "ratio_throughput": all_ / off,
        "ratio_cpu": cpu_all / cpu_off,
        "topic_records": records,
        "topic_bytes_per_million": round(size * 1_000_000 / records) if records else 0,
        "index": index,
    }


def table(history: dict[str, Any]) -> list[str]:
    index = history["index"]
    i, lk, o = index["ingest"], index["lookups"], index["overview"]
    return [
        "delivery history (scenario (a), 1 worker, history.record off and all alternating in this run):",
        f"  deliveries/s: off {history['off_per_second']:,.0f}, all {history['all_per_second']:,.0f}: "
        f"{history['ratio_throughput']:.2f}x (target >= 0.9x); CPU per delivery {history['ratio_cpu']:.2f}x",
        f"  attempts topic: {history['topic_records']:,} records, "
        f"{history['topic_bytes_per_million'] / 1e6:.0f} MB per million attempts before lz4",
        f"  index ingest: {i['per_second_wall']:,} attempts/s wall, {i['per_cpu_second']:,}/CPU-s "
        "(target >= 30,000/s)",
        f"  at {lk['attempts']:,} attempts: event lookup p99 {lk['event_lookup']['p99_ms']} ms (target < 10), "
        f"last 100 failures p99 {lk['last_100_failures']['p99_ms']} ms (target < 50)",
        f"  index disk per million attempts: {o['disk_bytes_per_million'] / 1e6:.0f} MB (ingested, with "
        f"rollups), {lk['disk_bytes_per_million'] / 1e6:.0f} MB (bulk-loaded)",
    ]
