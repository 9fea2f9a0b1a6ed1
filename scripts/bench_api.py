"""The API scenario: ``POST /v1/events`` on ``fanout api`` against the least an aiohttp server can do.

Two servers run side by side: ``fanout api`` (an API key, validation against the OpenAPI document,
idempotency, acks=all writes to a 6-partition topic) and ``scripts/bench_api_minimal.py`` (aiohttp on
uvloop: read the body, parse the JSON, answer 202). One load generator, wrk (C, one thread, keep-alive,
64 connections, a Lua script setting the method, headers and body), loads them in turn, round after
round, with the same 1 KiB event and the same headers; each round's ratio compares two loads measured
a few seconds apart (the machine is shared, its speed drifts). Then the batch form: arrays of ``BATCH``
events to fanout.

For each load: requests/s; the server's CPU per request (user + system time of the whole process, every
thread, from /proc); wrk's own CPU per request (it shares the machine); p50 and p99 latency (wrk's);
and, for fanout, the Kafka broker's CPU per event (the broker shares the machine too, and the minimal
handler needs none). Every load must get only 2xx answers, and the topic must hold at least as many
records as fanout acknowledged.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fanout.api.auth import key_digest
from fanout.kafka.ranges import RangeReader
from fanout.kafka.topics import admin_client, create_topics, internal_topics, source_topics

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 64
BATCH = 100
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class Load:
    """One wrk run against one server."""

    target: str
    requests: int
    seconds: float
    per_second: float
    events_per_second: float
    cpu_us_per_request: float
    client_cpu_us_per_request: float
    p50_ms: float
    p99_ms: float
    failed: int
    broker_cpu_us_per_event: float | None = None


@dataclass
class ApiReport:
    concurrency: int = CONCURRENCY
    event_bytes: int = 0
    batch_events: int = BATCH
    rounds: list[dict[str, Any]] = field(default_factory=list)  # {"minimal": Load, "fanout": Load, "ratio"}
    batch: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    records_checked: int = 0


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (to measure the broker's CPU), if this user can see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lua_script(path: Path, body: bytes, key: str) -> Path:
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\nwrk.body = {json.dumps(body.decode())}\n'
    )
    return path


def parse_wrk(out: str) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, failed) from wrk's --latency output."""
    requests, seconds, p50, p99, failed = 0, 0.0, 0.0, 0.0, 0
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] == "requests" and words[2] == "in":
            requests, seconds = int(words[0]), float(words[3].rstrip(",s"))
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            number = words[1].rstrip("usm")
            value = float(number) * UNITS[words[1][len(number) :]]
            p50, p99 = (value, p99) if words[0] == "50%" else (p50, value)
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            failed += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            failed += sum(int(w.rstrip(",")) for w in words[3::2])
    if not requests or not seconds:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return requests, seconds, p50, p99, failed


def wrk(url: str, script: Path, seconds: float) -> tuple[str, float]:
    """wrk's output and the CPU seconds it used."""
    args = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    return out, usage.ru_utime + usage.ru_stime


def load(
    target: str, url: str, pid: int, script: Path, seconds: float, events: int = 1, broker: int | None = None
) -> Load:
    cpu, broker_cpu = process_cpu(pid), process_cpu(broker) if broker else 0.0
    out, client_cpu = wrk(url, script, seconds)
    cpu, broker_cpu = process_cpu(pid) - cpu, (process_cpu(broker) - broker_cpu) if broker else 0.0
    requests, elapsed, p50, p99, failed = parse_wrk(out)
    return Load(
        target=target,
        requests=requests,
        seconds=elapsed,
        per_second=requests / elapsed,
        events_per_second=requests * events / elapsed,
        cpu_us_per_request=cpu / requests * 1e6,
        client_cpu_us_per_request=client_cpu / requests * 1e6,
        p50_ms=p50,
        p99_ms=p99,
        failed=failed,
        broker_cpu_us_per_event=(broker_cpu / (requests * events) * 1e6) if broker else None,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


def api_env(prefix: str, topic: str, port: int, key: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FANOUT_") or k == "FANOUT_KAFKA__BOOTSTRAP_SERVERS"
    }
    entry = {"name": "bench", "sha256": key_digest(key), "scopes": ["events:publish"]}
    env.update(
        {
            "FANOUT_TOPICS__PREFIX": prefix,
            "FANOUT_TOPICS__PARTITIONS": "6",
            "FANOUT_API__HOST": "127.0.0.1",
            "FANOUT_API__PORT": str(port),
            "FANOUT_API__TOPICS": json.dumps([topic]),
            "FANOUT_API__DEFAULT_TOPIC": topic,
            "FANOUT_API__KEYS": json.dumps([entry]),
        }
    )
    return env


def run_api_scenario(
    settings_for: Callable[[dict[str, str]], Any],
    workdir: Path,
    run_id: str,
    body: bytes,
    seconds: float,
    rounds: int,
    created: list[str],
) -> ApiReport:
    """Measure the API scenario; the topics it creates are appended to ``created`` (for clean-up)."""
    prefix, key = f"bench{run_id}api", "fo_bench_" + secrets.token_urlsafe(24)
    topic = f"{prefix}-events"
    api_port, minimal_port = free_port(), free_port()
    env = api_env(prefix, topic, api_port, key)
    settings = settings_for(env)
    specs = internal_topics(settings) + source_topics(settings, [topic])
    create_topics(admin_client(settings), specs)
    created += [spec.name for spec in specs]
    broker_port = int(settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    broker = listener_pid(broker_port)
    event = orjson.loads(body)
    single = lua_script(workdir / "api-single.lua", body, key)
    batch = lua_script(workdir / "api-batch.lua", orjson.dumps([event] * BATCH), key)
    report = ApiReport(event_bytes=len(body))
    logs = (workdir / "api.log").open("wb"), (workdir / "api-minimal.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "fanout", "api", "--log-level", "WARNING"],
        env=env, stdout=logs[0], stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    minimal = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench_api_minimal.py"), "--port", str(minimal_port)],
        stdout=logs[1], stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    urls = {
        "minimal": (f"http://127.0.0.1:{minimal_port}/v1/events", minimal.pid),
        "fanout": (f"http://127.0.0.1:{api_port}/v1/events", api.pid),
    }
    try:
        wait_ready(f"http://127.0.0.1:{api_port}/readyz", api)
        for target, (url, pid) in urls.items():  # warm up: connections, caches, the producer's metadata
            load(target, url, pid, single, 2)
        acknowledged = 0
        for _ in range(rounds):
            measured = {
                target: load(target, url, pid, single, seconds, broker=broker if target == "fanout" else None)
                for target, (url, pid) in urls.items()
            }
            acknowledged += measured["fanout"].requests - measured["fanout"].failed
            report.rounds.append(
                {
                    **{t: asdict(m) for t, m in measured.items()},
                    "ratio": measured["fanout"].per_second / measured["minimal"].per_second,
                }
            )
            print(
                f"  (api) minimal {measured['minimal'].per_second:,.0f}/s, fanout "
                f"{measured['fanout'].per_second:,.0f}/s: {report.rounds[-1]['ratio']:.2f}x",
                flush=True,
            )
        url, pid = urls["fanout"]
        batched = load("fanout", url, pid, batch, seconds, events=BATCH, broker=broker)
        acknowledged += (batched.requests - batched.failed) * BATCH
        report.batch = asdict(batched)
        print(f"  (api) batches of {BATCH}: {batched.events_per_second:,.0f} events/s", flush=True)
    finally:
        for proc in (api, minimal):
            proc.send_signal(signal.SIGTERM)
        for proc in (api, minimal):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    with RangeReader(settings) as reader:
        marks = reader.watermarks(topic, reader.partitions(topic))
    report.records_checked = sum(high - low for low, high in marks.values())
    if report.records_checked < acknowledged:
        raise RuntimeError(
            f"fanout acknowledged {acknowledged} events, the topic holds {report.records_checked}"
        )
    report.summary = summary(report)
    return report


def summary(report: ApiReport) -> dict[str, float]:
    def median(target: str, name: str) -> float:
        return statistics.median(r[target][name] for r in report.rounds)

    out = {
        "API publish / minimal handler, requests/s (median of rounds)": statistics.median(
            r["ratio"] for r in report.rounds
        ),
        "API publish, requests/s": median("fanout", "per_second"),
        "minimal handler, requests/s": median("minimal", "per_second"),
        "API publish, server CPU us/request": median("fanout", "cpu_us_per_request"),
        "minimal handler, server CPU us/request": median("minimal", "cpu_us_per_request"),
        "API publish, p50 ms": median("fanout", "p50_ms"),
        "API publish, p99 ms": median("fanout", "p99_ms"),
        "minimal handler, p50 ms": median("minimal", "p50_ms"),
        "minimal handler, p99 ms": median("minimal", "p99_ms"),
    }
    if report.batch:
        out[f"API batches of {report.batch_events}, events/s"] = report.batch["events_per_second"]
    return out


def table(api: dict[str, Any]) -> list[str]:
    """The API scenario's lines of the results table (``api``: an ``ApiReport`` as a dict)."""
    lines = [
        f"API scenario: POST /v1/events, {api['event_bytes']}-byte events, wrk -t1 -c{api['concurrency']}; "
        "fanout and the minimal aiohttp handler loaded in turn, every round",
        f"{'load':<28}{'req/s':>9}{'events/s':>10}{'CPU us/req':>11}{'wrk us/req':>11}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'broker us/ev':>13}{'failed':>7}",
    ]
    loads = [(f"round {i + 1} {t}", r[t]) for i, r in enumerate(api["rounds"]) for t in ("minimal", "fanout")]
    if api["batch"]:
        loads.append((f"fanout batches of {api['batch_events']}", api["batch"]))
    for name, m in loads:
        broker = m["broker_cpu_us_per_event"]
        lines.append(
            f"{name:<28}{m['per_second']:>9,.0f}{m['events_per_second']:>10,.0f}{m['cpu_us_per_request']:>11.0f}"
            f"{m['client_cpu_us_per_request']:>11.0f}{m['p50_ms']:>8.1f}{m['p99_ms']:>8.1f}"
            f"{'' if broker is None else f'{broker:.0f}':>13}{m['failed']:>7}"
        )
    lines.append(f"records in the topic afterwards: {api['records_checked']:,} (>= every 2xx answer)")
    return lines
