"""The console scenario: the overview page's server time with 1,000 subscriptions and 1 million
attempts in the history index (goal < 300 ms).

The index is built through ``HistoryStore.ingest`` (``scripts/bench_history.py``'s records: 1M
attempts over the last hour, spread over ``sub-0000`` .. ``sub-0999``, about 10% failures); the same
1,000 subscriptions are written to a subscriptions topic of a fresh prefix on the running broker.
Then ``fanout api`` (built in this process, with ``use_history`` on that index) serves
``GET /console/`` on loopback to a signed-in aiohttp client: the default view (sorted by id), sorted
by volume (highest first), sorted by p99 latency (the one view that merges every subscription's
latency histograms), and a search. The server time is the page's own ``Server-Timing`` (from the
handler's start to the rendered page): the list of subscriptions, every index query (the hour's counts
of all subscriptions, the latest records of those failing, latency percentiles, sparklines and last
failures of the 100 rows shown) and the template. The machine may be shared: the CPU time of the
process per request (server and client, every thread) is reported too, and does not grow with the
load of other processes the way wall time does. "cold": nothing is reused, every request reads the
index; "warm": the hour's overview and the rows' details are reused (``OVERVIEW_MAX_AGE``), as when a
person sorts, searches or pages.

Usage: ``.venv/bin/python scripts/bench_console.py [--attempts N] [--runs N]``; ``scripts/bench``
runs it as scenario ``console``. Prints a table, writes JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_history import HOUR_MS, SUBSCRIPTIONS, ingest  # noqa: E402

from fanout.api.app import build_app  # noqa: E402
from fanout.api.app import runner as api_runner  # noqa: E402
from fanout.api.auth import key_digest  # noqa: E402
from fanout.api.console import use_history  # noqa: E402
from fanout.config import SCOPES, ApiKey, ApiSettings, KafkaSettings, SecretsSettings, Settings, TopicSettings  # noqa: E402
from fanout.control.secretbox import new_key  # noqa: E402
from fanout.control.subscriptions import SubscriptionStore  # noqa: E402
from fanout.history.store import HistoryStore  # noqa: E402
from fanout.http.signing import new_secret  # noqa: E402
from fanout.kafka.topics import admin_client, create_topics, internal_topics, source_topics  # noqa: E402
from fanout.model.subscription import parse_subscription  # noqa: E402

RESULTS = ROOT / "bench-results"
GOAL_MS = 300
VIEWS = {
    "default": "/console/",
    "by_volume": "/console/?sort=volume&dir=desc",
    "by_p99": "/console/?sort=p99&dir=desc",
    "search": "/console/?q=sub-09",
}


def settings_for(prefix: str, key: str) -> Settings:
    bootstrap = os.environ.get("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topic = f"{prefix}.events"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(prefix=f"{prefix}.fanout", partitions=1),
        secrets=SecretsSettings(keys=[SecretStr(new_key())]),
        api=ApiSettings(
            port=0,
            topics=[topic],
            default_topic=topic,
            keys=[ApiKey(name="bench", sha256=key_digest(key), scopes=list(SCOPES))],  # type: ignore[arg-type]
        ),
    )


def subscriptions(settings: Settings) -> None:
    """The topics, and the same 1,000 subscriptions the index has records of."""
    assert settings.api.default_topic is not None
    topic = settings.api.default_topic
    specs = internal_topics(settings) + source_topics(settings, [topic])
    create_topics(admin_client(settings), specs)
    store = SubscriptionStore(settings)
    try:
        store.apply(
            [
                parse_subscription(
                    {
                        "id": f"sub-{i:04d}",
                        "url": f"https://hooks.example.com/{i}",
                        "topics": [topic],
                        "secrets": [new_secret()],
                    }
                )
                for i in range(SUBSCRIPTIONS)
            ]
        )
    finally:
        store.close()


def delete_topics(settings: Settings, prefix: str) -> None:
    admin = admin_client(settings)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.exception(timeout=60)


def _timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def measure(settings: Settings, store: Any, key: str, runs: int, max_age: float) -> dict[str, Any]:
    """Time each view ``runs`` times (after two untimed requests): the server's own time from the
    ``Server-Timing`` header (and its parts), and the round trip on loopback."""
    app = build_app(settings)
    use_history(app, store, max_age)
    runner = api_runner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(base + "/console/login") as r:
                found = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
                assert found, "the sign-in form has a CSRF token"
            form = {"credential": key, "csrf_token": found.group(1)}
            async with session.post(base + "/console/login", data=form) as r:
                assert r.status == 200 and 'class="who"' in await r.text(), f"sign-in failed: {r.status}"
            for name, path in VIEWS.items():
                trips: list[float] = []
                cpu: list[float] = []
                parts: dict[str, list[float]] = {}
                for n in range(runs + 2):
                    t, c = time.perf_counter(), time.process_time()
                    async with session.get(base + path) as r:
                        body = await r.text()
                        assert r.status == 200, (path, r.status)
                        timing = _timing(r.headers["Server-Timing"])
                    if n >= 2:
                        trips.append((time.perf_counter() - t) * 1000)
                        cpu.append((time.process_time() - c) * 1000)
                        for part, ms in timing.items():
                            parts.setdefault(part, []).append(ms)
                assert body.count("data-subscription=") == 100, "a page of 100 rows"
                out[name] = {
                    "runs": runs,
                    "server": _summary(parts.pop("total")),
                    "parts_p50_ms": {p: round(statistics.median(v), 1) for p, v in parts.items()},
                    "round_trip": _summary(trips),
                    "cpu_ms_p50": round(statistics.median(cpu), 1),
                }
    finally:
        await runner.cleanup()
    return out


def run_console_scenario(
    attempts: int = 1_000_000, runs: int = 20, index: Path | None = None
) -> dict[str, Any]:
    """Build the index, serve the console, time the overview; the scenario's report (a dict)."""
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-console-"))
    prefix = "benchc" + uuid.uuid4().hex[:8]
    key = "fo_bench_" + secrets.token_urlsafe(24)
    settings = settings_for(prefix, key)
    result: dict[str, Any] = {"attempts": attempts, "subscriptions": SUBSCRIPTIONS, "goal_ms": GOAL_MS}
    result["load_before"] = os.getloadavg()
    try:
        if index is not None and index.exists():
            store = HistoryStore(index, 8 * 24 * 3600)
            store.open()
            result["attempts"] = sum(sum(r.totals.counts.values()) for r in store.overview(3600))
        else:
            print(f"console: indexing {attempts:,} attempts over the last hour", file=sys.stderr, flush=True)
            store, built = ingest(index or work / "history.sqlite", attempts, HOUR_MS - 120_000, seed=2)
            result["index_rows_per_second"] = built["per_second_wall"]
        subscriptions(settings)
        print("console: timing GET /console/", file=sys.stderr, flush=True)
        # cold: every request reads the index (the overview is not reused); warm: the overview of
        # the hour is reused (as when a person sorts, searches or pages within OVERVIEW_MAX_AGE)
        result["cold"] = asyncio.run(measure(settings, store, key, runs, max_age=0))
        result["warm"] = asyncio.run(measure(settings, store, key, runs, max_age=3600))
        store.close()
    finally:
        result["load_after"] = os.getloadavg()
        shutil.rmtree(work, ignore_errors=True)
        delete_topics(settings, prefix)
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"console overview, {result['subscriptions']:,} subscriptions, {result['attempts']:,} attempts "
        f"in the index; server time (goal < {result['goal_ms']} ms), then its parts (p50)"
    ]
    for kind in ("cold", "warm"):
        for name, v in result[kind].items():
            s, parts = v["server"], v["parts_p50_ms"]
            lines.append(
                f"  {kind} {name:<10} p50 {s['p50_ms']:>6} ms  p99 {s['p99_ms']:>6} ms  "
                f"(subscriptions {parts['subscriptions']}, history {parts['history']}, "
                f"render {parts['render']}; CPU p50 {v['cpu_ms_p50']} ms, {v['runs']} runs)"
            )
    lines.append(f"  load average {result['load_before']} -> {result['load_after']} on {os.cpu_count()} CPUs")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=1_000_000, help="attempts in the index (last hour)")
    parser.add_argument("--runs", type=int, default=20, help="requests timed per view")
    parser.add_argument("--index", type=Path, help="an index file to reuse (built there when missing; kept)")
    parser.add_argument("--out", type=Path, help="where to write the JSON result")
    args = parser.parse_args()
    result = run_console_scenario(args.attempts, args.runs, args.index)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print("\n".join(table(result)))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
