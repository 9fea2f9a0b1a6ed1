"""Metrics and logs of a real ``fanout run`` process: a scrape of ``/metrics`` counts what the receivers
and the dead-letter topic hold, contains every metric the dashboard and the alert rules use, and the
process's log lines are JSON with trace ids and no secret."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from fanout.http.signing import new_secret
from fanout.kafka.publisher import Publisher
from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    produce,
    read_topic,
    subscription,
)
from tests.receivers import Receiver, failing_first_attempt

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm/fanout/dashboards/fanout.json"
RULES = ROOT / "helm/fanout/alerts/fanout-rules.yaml"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_scrape(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples.append((match[1], dict(LABEL.findall(match[2] or "")), float(match[3])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, ls, v in samples if n == name and all(ls.get(k) == want for k, want in labels.items())
    )


def metric_names_used() -> set[str]:
    """Every fanout_* series name in the dashboard's and the alert rules' expressions."""
    exprs = re.findall(r'"expr":\s*"((?:[^"\\]|\\.)*)"', DASHBOARD.read_text())
    exprs += re.findall(r"expr:\s*(.+(?:\n\s{8,}.+)*)", RULES.read_text())
    return {name for expr in exprs for name in re.findall(r"\bfanout_[a-z_]+\b", expr)}


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def test_metrics_match_receivers_and_dead_letters_and_logs_are_json_without_secrets(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = engine_settings(
        bootstrap,
        unique,
        dispatcher={"http_port": port, "http_host": "127.0.0.1"},
        delivery={"breaker_failures": 1000},  # every first attempt to "flaky" fails: no probe cool-downs
        telemetry={"log_format": "json", "log_level": "DEBUG"},
    )
    topic = f"{unique}.orders"
    create_engine_topics(settings, [topic])
    secret = new_secret()
    header_secret = "hdr-" + new_secret()[6:]
    query_secret = "qry" + unique

    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410)

    async def bad(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=400)

    n = 20
    async with (
        Receiver() as ok,
        Receiver(failing_first_attempt()) as flaky,
        Receiver(gone) as gone_r,
        Receiver(bad) as bad_r,
    ):
        subs = [
            subscription(
                "ok",
                f"{ok.url}/hook?token={query_secret}",
                [topic],
                secrets=[secret],
                headers={"X-Api-Key": header_secret},
            ),
            subscription("flaky", flaky.url, [topic], retry={"schedule": [0.2] * 5}),
            subscription("gone", gone_r.url, [topic]),
            subscription("bad", bad_r.url, [topic]),
        ]
        await apply(settings, subs)
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        process.start()
        try:
            publisher = Publisher(bootstrap, tracer_provider=TracerProvider())  # producer traces, sampled
            for i in range(n):
                publisher.publish(
                    topic, "order.created", {"i": i, "card": "4111-1111-1111-1111"}, event_id=f"o{i}"
                )
            publisher.flush()
            produce(settings, topic, [b"not json"])
            await ok.wait_count(n, 60)
            await flaky.wait_for(lambda reqs: len(reqs) >= 2 * n, 60)
            dead = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 2 * n + 1, 60)
            samples = await wait_for_metrics(port, {"fanout_consumer_lag", "fanout_subscription_disabled"})
            assert (await scrape(port, "/healthz"))[0] == 200
            assert (await scrape(port, "/readyz"))[0] == 200
        finally:
            code = process.terminate()
            process.close()
    assert code == 0

    def count(subscription: str, outcome: str) -> float:
        return total(samples, "fanout_deliveries_total", subscription=subscription, outcome=outcome)

    flaky_ok = len(flaky.requests) - len({r.headers["webhook-id"] for r in flaky.requests})  # not firsts
    assert count("ok", "delivered") == len(ok.requests) == n
    assert count("flaky", "delivered") == flaky_ok == n
    assert count("flaky", "retried") == n
    assert total(samples, "fanout_dead_letters_total") == len(dead) == 2 * n + 1
    reasons = Counter(
        {
            ls["reason"]: v
            for name, ls, v in samples
            if name == "fanout_dead_letters_total" and "subscription" in ls
        }
    )
    assert total(samples, "fanout_dead_letters_total", reason="permanent_failure", subscription="bad") == n
    assert total(samples, "fanout_dead_letters_total", reason="poison") == 1
    assert reasons["endpoint_gone"] + reasons["subscription_disabled"] == n
    attempts = "fanout_delivery_attempt_duration_seconds_count"
    assert total(samples, attempts, subscription="bad", result="4xx") == len(bad_r.requests) == n
    assert total(samples, attempts, subscription="flaky", result="5xx") == n
    assert total(samples, "fanout_delivery_latency_seconds_count", subscription="ok") == n
    assert total(samples, "fanout_subscription_disabled", subscription="gone") == 1

    names = {name for name, _, _ in samples}
    used = metric_names_used()
    assert len(used) >= 10
    assert used <= names, f"used by the dashboard or alerts but not scraped: {sorted(used - names)}"

    lines = (tmp_path / "dispatcher.log").read_text().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is JSON
    about_deliveries = [r for r in records if "event_id" in r and "subscription" in r]
    assert {r["message"] for r in about_deliveries} >= {"delivered", "dead-lettered"}
    for record in about_deliveries:
        assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]), record
        assert re.fullmatch(r"[0-9a-f]{16}", record["span_id"]), record
    text = "\n".join(lines)
    for leaked in (secret, secret.removeprefix("whsec_"), header_secret, query_secret, "4111-1111-1111-1111"):
        assert leaked not in text


async def wait_for_metrics(
    port: int, names: set[str], timeout: float = 30
) -> list[tuple[str, dict[str, str], float]]:
    """Scrape until ``names`` appear (consumer lag comes with the client statistics, every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = await scrape(port)
        assert status == 200
        samples = parse_scrape(text)
        missing = names - {name for name, _, _ in samples}
        if not missing:
            return samples
        assert time.monotonic() < deadline, f"never scraped {missing}"
        await asyncio.sleep(0.5)  # polling the dispatcher's /metrics with a deadline
