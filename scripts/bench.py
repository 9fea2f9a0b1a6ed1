"""fanout's benchmark: the dispatcher against the fastest plain aiohttp client, on the same machine.

Scenarios (each with 1 worker process, then 2; (a) also with the aiohttp transport, 1 worker, so one run
compares the two delivery transports): (a) one subscription; (b) fan-out to 10 subscriptions
per event; (c) 10,000 subscriptions in the routing table, one match per event (a tenant filter; the
events go round all 10,000, so every subscription's lane is busy); (d) 5% of deliveries answered 500
(the retry path); (e) 1,000 subscriptions on the topic, each with a CEL filter_expr on data
(``data.customer == "c<i>" && data.amount > 100``), one match per event, with scripts/bench_cel.py's CPU per
evaluation of each CEL library; (f), not run by default, is (e) with the same 1,000 busy lanes
chosen by an attribute filter instead of CEL (the cost of the lanes without CEL's). Then
produce-to-receipt latency at 50% of (a)'s measured maximum (the median of its rounds). Events are
produced in advance; each run is a fresh consumer group reading from the beginning. The ceiling (a
plain aiohttp client, no Kafka) is measured right before each scenario, which is compared with it.
Scenario ``api`` (scripts/bench_api.py): ``POST /v1/events`` on ``fanout api`` against a minimal aiohttp
handler, both loaded by wrk in the same run. Scenario ``console`` (scripts/bench_console.py): the web
console's overview, server time with 1,000 subscriptions and 1 million attempts in the history index.
Scenario ``history`` (scripts/bench_history_run.py): (a)
with ``history.record`` off and all, alternating in the same run, the attempts topic's bytes, and the
index's figures (scripts/bench_history.py). Select scenarios as ``--scenarios abcde,api,console,history``.
Scenarios (a) to (d) run with the default ``history.record: all``.

Results: a table on stdout, JSON in bench-results/, and a PNG chart next to it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proc import ProcessMonitor
from bench_sink import Receipt, Sink

from fanout.config import load_settings
from fanout.control.subscriptions import SubscriptionStore
from fanout.http.signing import new_secret
from fanout.kafka.topics import admin_client, create_topics, internal_topics, source_topics
from fanout.model.subscription import parse_subscription

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
CONCURRENCY = 64
SINK_PORT = int(os.environ.get("FANOUT_BENCH_SINK_PORT", "18089"))


@dataclass
class Scenario:
    key: str
    title: str
    events: int
    fanout: int = 1
    subscriptions: int = 1
    path: str = "/ok"
    tenants: int = 0
    data_filters: int = 0  # subscriptions with filter_expr on data; event i matches subscription i % n

    @property
    def deliveries(self) -> int:
        return self.events * self.fanout


@dataclass
class Run:
    scenario: str
    workers: int
    deliveries: int
    per_second: float
    cpu_per_1000: float
    peak_rss_mib: float
    failed_responses: int = 0
    ceiling_per_second: float = 0.0  # the ceiling measured just before this scenario
    ratio_throughput: float = 0.0
    ratio_cpu: float = 0.0
    transport: str = "fast"
    round: int = 1  # rounds after the first repeat the 1-worker runs (--rounds)


@dataclass
class Report:
    machine: dict[str, Any]
    cores: str
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)  # by scenario
    sink_capacity: float = 0.0
    runs: list[Run] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)
    api: dict[str, Any] = field(default_factory=dict)  # scripts/bench_api.py's ApiReport
    console: dict[str, Any] = field(default_factory=dict)  # scripts/bench_console.py's result
    cel: dict[str, Any] = field(default_factory=dict)  # scripts/bench_cel.py --json, with scenario (e)
    history: dict[str, Any] = field(default_factory=dict)  # scripts/bench_history_run.py


def body(size: int) -> bytes:
    pad = max(0, size - 80)
    return orjson.dumps({"event": "bench.created", "data": {"blob": "x" * pad}})


def data_body(size: int, customer: int) -> bytes:
    """An event of about ``size`` bytes for scenario (e): its ``data.customer`` selects one subscription."""
    pad = max(0, size - 110)
    data = {"customer": f"c{customer}", "amount": 1500, "currency": "EUR", "blob": "x" * pad}
    return orjson.dumps({"event": "bench.created", "data": data})


def env_for(prefix: str, group: str, transport: str = "fast") -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FANOUT_") or k == "FANOUT_KAFKA__BOOTSTRAP_SERVERS"
    }
    env.update(
        {
            "FANOUT_TOPICS__PREFIX": prefix,
            "FANOUT_TOPICS__PARTITIONS": "6",
            "FANOUT_DISPATCHER__GROUP_ID": group,
            "FANOUT_DISPATCHER__HTTP_PORT": "0",  # no probes needed; 8081 may be another run's
            "FANOUT_DELIVERY__ALLOW_HTTP": "true",
            "FANOUT_DELIVERY__ALLOW_CIDRS": '["127.0.0.0/8"]',
            "FANOUT_DELIVERY__CONNECTIONS_PER_HOST": str(CONCURRENCY),
            "FANOUT_DELIVERY__TRANSPORT": transport,
            "FANOUT_RETRY__TIERS": "[1, 2, 5, 10]",
            "FANOUT_RETRY__SCHEDULE": "[1, 1, 2, 2, 5, 5, 10, 10]",
        }
    )
    return env


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:6]
        self.settings = load_settings()
        self.body = body(args.size)
        self.workdir = RESULTS / f"work-{self.run_id}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.topics: list[str] = []
        self._prepared: dict[str, tuple[str, str]] = {}

    def clean_up(self, succeeded: bool) -> None:
        """Delete the topics this run created (a development broker would otherwise collect thousands of
        partitions over repeated runs, and slow down), and the working folder unless the run failed (it
        holds the dispatchers' logs)."""
        if self.topics:
            admin = admin_client(self.settings)  # kept until the futures resolve
            # each name once: a repeated name gets an INVALID_REQUEST, and runs that asked to delete
            # (a)'s topics twice (listed by (a) and by the history scenario) died of SIGSEGV here, in
            # confluent-kafka's admin result callback (rd_kafka_topic_result_error_string, rdk:bg)
            names = list(dict.fromkeys(self.topics))
            futures = admin.delete_topics(names, operation_timeout=30)
            for future in futures.values():
                try:
                    future.result(timeout=60)
                except KafkaException as exc:  # report it and go on: the results are written
                    print(f"bench: could not delete a topic: {exc}", file=sys.stderr)
        if succeeded:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- setup -----------------------------------------------------------------------------------

    def prepare(self, scenario: Scenario, sink_url: str) -> tuple[str, str]:
        """Topics, subscriptions and the pre-produced events of one scenario; (prefix, topic). Once per
        scenario and run: the history scenario runs (a) again over the events (a) was prepared with."""
        if scenario.key in self._prepared:
            return self._prepared[scenario.key]
        prefix = f"bench{self.run_id}{scenario.key}"
        topic = f"{prefix}-events"
        env = env_for(prefix, "unused")
        settings = load_settings_from(env)
        specs = internal_topics(settings) + source_topics(settings, [topic])
        create_topics(admin_client(settings), specs)
        self.topics += [spec.name for spec in specs]
        subs = []
        for i in range(max(scenario.fanout, scenario.subscriptions)):
            doc: dict[str, Any] = {
                "id": f"s{i}",
                "url": f"{sink_url}{scenario.path}/{i}",
                "topics": [topic],
                "secrets": [new_secret()],
                "max_in_flight": CONCURRENCY,
            }
            if scenario.tenants:
                doc["filter"] = {"tenant": f"t{i}"}
            if scenario.data_filters:
                doc["filter_expr"] = f'data.customer == "c{i}" && data.amount > 100'
            subs.append(parse_subscription(doc))
        store = SubscriptionStore(settings)
        store.apply(subs)
        store.close()
        producer = Producer(
            {**settings.kafka.librdkafka(), "linger.ms": 20, "batch.size": 1_000_000, "acks": 1}
        )
        # Round-robin over the partitions: the sticky partitioner put 1 MB batches on random partitions,
        # so a run ended on one or two partitions and its tail measured one partition's fetch rate.
        partitions = settings.topics.partitions
        for i in range(scenario.events):
            headers = [("tenant", f"t{i % scenario.tenants}".encode())] if scenario.tenants else None
            value = (
                data_body(self.args.size, i % scenario.data_filters) if scenario.data_filters else self.body
            )
            while True:
                try:
                    producer.produce(topic, value, headers=headers, partition=i % partitions)
                    break
                except BufferError:  # the local queue is full: wait for deliveries
                    producer.poll(0.1)
            if i % 20_000 == 0:
                producer.poll(0)
        producer.flush(60)
        self._prepared[scenario.key] = prefix, topic
        return prefix, topic

    # -- one dispatcher run ----------------------------------------------------------------------

    def dispatch(
        self,
        scenario: Scenario,
        prefix: str,
        workers: int,
        sink: Sink,
        transport: str = "fast",
        history: str = "all",
    ) -> Run:
        group = f"{prefix}-g{workers}-{transport}-{history}-{uuid.uuid4().hex[:4]}"
        env = env_for(prefix, group, transport)
        env["FANOUT_HISTORY__RECORD"] = history
        sink.reset()
        log = (self.workdir / f"{scenario.key}-{workers}-{transport}-{history}.log").open("wb")
        args = [sys.executable, "-m", "fanout", "run", "--log-level", "WARNING"]
        if workers > 1:
            args += ["--workers", str(workers)]
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        monitor = ProcessMonitor(proc.pid)
        monitor.start()
        deadline = time.monotonic() + self.args.run_timeout
        stable: float | None = None
        try:
            while sink.count(204) < scenario.deliveries:
                if stable is None and members_with_partitions(self.settings, group) >= workers:
                    stable = time.time()  # the group has settled: the steady state starts here
                if proc.poll() is not None:
                    raise RuntimeError(f"the dispatcher exited with {proc.returncode}; see {log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{scenario.key}: only {sink.count(204)} of {scenario.deliveries} arrived"
                    )
                time.sleep(0.2)
        finally:
            monitor.stop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1.2)  # nginx flushes its access log buffer every second
        receipts = [r for r in sink.receipts() if r.path.startswith(scenario.path)]
        run = summarise(scenario, workers, receipts, monitor, stable or 0.0)
        run.transport = transport
        return run

    # -- latency at a fixed offered load -----------------------------------------------------------

    def latency(self, rate: float, sink: Sink) -> dict[str, float]:
        scenario = Scenario("lat", "latency", events=0)
        prefix, topic = self.prepare(scenario, sink.url)
        env = env_for(prefix, f"{prefix}-lat")
        sink.reset()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "run", "--log-level", "INFO"],
            env=env,
            stdout=(log := (self.workdir / "latency.log").open("wb")),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_for_text(Path(log.name), "assigned", 60)
            time.sleep(2)  # let the assignment settle before the clock starts
            sent = paced_produce(load_settings_from(env), topic, self.body, rate, self.args.latency_seconds)
            deadline = time.monotonic() + 60
            while sink.count(204) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        time.sleep(1.2)
        latencies = sorted(
            (r.at - sent[r.webhook_id]) * 1000
            for r in sink.receipts()
            if r.webhook_id in sent and r.status == 204
        )
        if not latencies:
            raise RuntimeError("no latency samples")
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        return {
            "offered_per_second": rate,
            "samples": len(latencies),
            "p50_ms": pick(0.50),
            "p95_ms": pick(0.95),
            "p99_ms": pick(0.99),
            "max_ms": latencies[-1],
        }

    # -- the ceiling and the sink's headroom --------------------------------------------------------

    def ceiling(self, sink: Sink) -> dict[str, float]:
        body_file = self.workdir / "body.json"
        body_file.write_bytes(self.body)
        sink.reset()
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_ceiling.py"), "--url", sink.url + "/ceiling",
             "--body-file", str(body_file), "--count", str(self.args.events), "--concurrency", str(CONCURRENCY)],
            capture_output=True, check=True,
        )  # fmt: skip
        result: dict[str, float] = orjson.loads(out.stdout)
        result["cpu_per_1000"] = result["cpu_seconds"] / result["requests"] * 1000
        return result

    def sink_capacity(self, sink: Sink) -> float:
        script = self.workdir / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(self.body.decode())}\n"
        )
        out = subprocess.run(
            ["wrk", "-t1", f"-c{CONCURRENCY}", "-d5s", "-s", str(script), sink.url + "/wrk"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        for line in out.stdout.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        raise RuntimeError(f"could not read wrk's output:\n{out.stdout}")


def load_settings_from(env: dict[str, str]) -> Any:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_for_text(path: Path, needle: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while needle not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{needle!r} did not appear in {path}")
        time.sleep(0.1)


def paced_produce(settings: Any, topic: str, value: bytes, rate: float, seconds: float) -> dict[str, float]:
    """Produce at ``rate`` events/s for ``seconds``; the send time of each event id.

    Every millisecond or so it produces the events that have come due, each stamped when it is handed to
    the producer: sleeping between single events cost this generator more CPU than the dispatcher it
    measures (the two share the machine's cores)."""
    producer = Producer({**settings.kafka.librdkafka(), "linger.ms": 5, "acks": 1})
    head, tail = orjson.dumps({**orjson.loads(value), "id": "@ID@"}).split(b"@ID@")
    sent: dict[str, float] = {}
    start = time.time()
    total = int(rate * seconds)
    i = 0
    while i < total:
        due = min(total, int((time.time() - start) * rate) + 1)
        while i < due:
            event_id = f"lat{i}"
            sent[event_id] = time.time()
            producer.produce(topic, head + event_id.encode() + tail)
            i += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)
    return sent


def members_with_partitions(settings: Any, group: str) -> int:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(settings.kafka.librdkafka())
        description = admin.describe_consumer_groups([group])[group].result(timeout=5)
    except Exception:
        return 0
    return sum(1 for m in description.members if m.assignment and m.assignment.topic_partitions)


def summarise(
    scenario: Scenario, workers: int, receipts: list[Receipt], monitor: ProcessMonitor, stable: float
) -> Run:
    """Throughput and CPU over the middle of the run: from the 10th percentile of receipts (or the moment
    the consumer group settled, if later: a rebalance is not the steady state) to the 90th."""
    ok = sorted(r.at for r in receipts if r.status == 204)
    failed = sum(1 for r in receipts if r.status != 204)
    start = max(len(ok) // 10, bisect.bisect_left(ok, stable))
    end = (len(ok) * 9) // 10
    if end - start < len(ok) // 4:
        raise RuntimeError(f"{scenario.key}: the group settled too late for a steady-state window")
    lo, hi = ok[start], ok[end]
    counted = end - start
    cpu = monitor.cpu_at(hi) - monitor.cpu_at(lo)
    return Run(
        scenario=scenario.key,
        workers=workers,
        deliveries=len(ok),
        per_second=counted / (hi - lo),
        cpu_per_1000=cpu / counted * 1000,
        peak_rss_mib=monitor.peak_rss_kib / 1024,
        failed_responses=failed,
    )


def cel_libraries() -> dict[str, Any]:
    """scripts/bench_cel.py's CPU per compile, bind and evaluation of each CEL library installed."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_cel.py"), "--json", "--repeat", "3"],
        capture_output=True,
        check=True,
        timeout=600,
    )
    return dict(orjson.loads(done.stdout))


def scenario_keys(text: str) -> tuple[str, bool, bool, bool]:
    """``--scenarios``: the dispatcher scenarios' letters, and whether to run the API, the console and
    the history scenarios."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    extras = ("api", "console", "history")
    letters = "".join(p for p in parts if p not in extras)
    unknown = set(letters) - set(SCENARIOS)
    if unknown:
        raise SystemExit(
            f"unknown scenarios: {''.join(sorted(unknown))} (choose from abcdef, api, console and history)"
        )
    return letters, "api" in parts, "console" in parts, "history" in parts


SCENARIOS = {
    "a": lambda n: Scenario("a", "one subscription", n),
    "b": lambda n: Scenario("b", "fan-out to 10 subscriptions", n // 10, fanout=10),
    "c": lambda n: Scenario(
        "c", "10,000 subscriptions, 1 match each", n, subscriptions=10_000, tenants=10_000
    ),
    "d": lambda n: Scenario("d", "5% answered 500 (retry path)", n, path="/flaky"),
    "f": lambda n: Scenario(
        "f", "1,000 attribute filters ((e) without CEL)", n, subscriptions=1_000, tenants=1_000
    ),
    "e": lambda n: Scenario(
        "e", "1,000 CEL data filters, 1 match each", n, subscriptions=1_000, data_filters=1_000
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=150_000, help="deliveries per scenario run")
    parser.add_argument("--size", type=int, default=1024, help="event size in bytes")
    parser.add_argument(
        "--scenarios",
        default="abcde,api,console,history",
        help="dispatcher scenarios (letters), api, console and/or history, e.g. ab or a,api,history",
    )
    parser.add_argument("--history-rounds", type=int, default=2, help="history: rounds of (off, all)")
    parser.add_argument(
        "--history-rows", type=int, default=10_000_000, help="history: attempts in the lookup index"
    )
    parser.add_argument("--api-seconds", type=float, default=10, help="api: seconds per load")
    parser.add_argument("--api-rounds", type=int, default=3, help="api: rounds of (minimal, fanout)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the 1-worker runs (ratios: their median)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    parser.add_argument(
        "--transports",
        default="fast,aiohttp",
        help="delivery transports for scenario (a); those after the first run with the first worker count",
    )
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--run-timeout", type=float, default=180)
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also copy the results to bench-results/published/ (committed; docs/performance.md shows them)",
    )
    args = parser.parse_args()
    bench = Bench(args)
    report = Report(
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        cores=(
            "unpinned: the Kafka broker, nginx (1 worker), the producer-free dispatcher (or the ceiling "
            f"client) all share the machine's {os.cpu_count()} cores, in every measurement"
        ),
    )
    started = time.time()
    succeeded = False
    try:
        letters, run_api, run_console, run_history = scenario_keys(args.scenarios)
        with_sink = letters or run_history
        with Sink(bench.workdir / "sink", SINK_PORT) if with_sink else contextlib.nullcontext() as sink:
            if letters:
                report.sink_capacity = bench.sink_capacity(sink)
                print(f"sink alone: {report.sink_capacity:.0f} requests/s")
            prefixes: dict[str, str] = {}
            # One run of a scenario swings by +-10% on this shared machine, so the 1-worker runs the
            # ratios between scenarios are taken from are repeated in interleaved rounds (a, c, d, e, a,
            # c, ...): each round's ratios are from that round, and the summary gives their median.
            for round_ in range(1, args.rounds + 1):
                for key in letters:
                    scenario = SCENARIOS[key](args.events)
                    if key not in prefixes:
                        prefixes[key], _ = bench.prepare(scenario, sink.url)
                    prefix = prefixes[key]
                    # The machine's speed drifts (it is shared): each scenario is compared with a ceiling
                    # measured right before it, not with one measured minutes earlier.
                    ceiling = bench.ceiling(sink)
                    report.ceilings[key if round_ == 1 else f"{key}#{round_}"] = ceiling
                    print(f"  ceiling before ({key}): {ceiling['per_second']:.0f} requests/s", flush=True)
                    if round_ == 1:
                        worker_counts = [int(w) for w in args.workers.split(",")]
                        transports = args.transports.split(",") if key == "a" else ["fast"]
                        plan = [(transports[0], w) for w in worker_counts]
                        plan += [(t, worker_counts[0]) for t in transports[1:]]
                    else:
                        plan = [("fast", 1)]
                    for transport, workers in plan:
                        run = bench.dispatch(scenario, prefix, workers, sink, transport)
                        run.round = round_
                        run.ceiling_per_second = ceiling["per_second"]
                        run.ratio_throughput = run.per_second / ceiling["per_second"]
                        run.ratio_cpu = run.cpu_per_1000 / ceiling["cpu_per_1000"]
                        report.runs.append(run)
                        print(
                            f"  round {round_} ({key}) {scenario.title}, {workers} worker(s), {transport}: "
                            f"{run.per_second:.0f}/s",
                            flush=True,
                        )
            if "e" in letters:
                report.cel = cel_libraries()
            a_runs = [
                r.per_second
                for r in report.runs
                if r.scenario == "a" and r.workers == 1 and r.transport == "fast"
            ]
            if a_runs and args.latency_seconds > 0:
                # (a)'s maximum is the median of its rounds: the first round alone, minutes before this
                # phase on a machine whose speed drifts, had put the offered load at up to 65% of the
                # dispatcher's speed at the time, where queueing, not the dispatcher, sets the tail
                report.latency = bench.latency(statistics.median(a_runs) * 0.5, sink)
            if run_history:
                from bench_history_run import run_history_scenario

                report.history = run_history_scenario(bench, sink, SCENARIOS["a"](args.events))
        if run_api:
            from bench_api import run_api_scenario

            api = run_api_scenario(
                load_settings_from, bench.workdir, bench.run_id, bench.body, args.api_seconds,
                args.api_rounds, bench.topics,
            )  # fmt: skip
            report.api = asdict(api)
        if run_console:
            # in a process of its own, like the other tools: one full run crashed (SIGSEGV) in this
            # process after the API scenario, and never alone; faulthandler names where if it recurs
            out = bench.workdir / "console.json"
            subprocess.run(
                [
                    sys.executable,
                    "-X",
                    "faulthandler",
                    str(ROOT / "scripts" / "bench_console.py"),
                    "--out",
                    str(out),
                ],
                check=True,
                timeout=1800,
            )
            report.console = orjson.loads(out.read_bytes())
        succeeded = True
        report.machine["seconds"] = round(time.time() - started, 1)
        from bench_report import write_report

        write_report(report, RESULTS, asdict)  # before the clean-up: two full runs died (SIGSEGV) in it
        if args.publish:
            published = RESULTS / "published"
            published.mkdir(exist_ok=True)
            for suffix in ("json", "txt", "png"):
                shutil.copyfile(RESULTS / f"latest.{suffix}", published / f"bench.{suffix}")
            print(f"published to {published}/bench.{{json,txt,png}}", flush=True)
    finally:
        bench.clean_up(succeeded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
