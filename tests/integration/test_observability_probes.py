"""Probes: ``/readyz`` once joined (also for a member that owns no partition), ``/healthz`` failing
within ``dispatcher.stall_timeout`` when the poll loop stalls (test hook), and recovering after;
with ``--workers 2``, each worker on its own port."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    running,
    subscription,
)
from tests.integration.test_observability_metrics import free_port, parse_scrape, scrape, total
from tests.receivers import Receiver

STALL_TIMEOUT = 2.0


async def wait_status(port: int, path: str, status: int, timeout: float) -> float:
    """Poll ``path`` until it answers ``status``; return how long that took."""
    start = time.monotonic()
    while True:
        try:
            got, body = await scrape(port, path)
        except aiohttp.ClientConnectionError as exc:  # not listening yet
            got, body = 0, str(exc)
        if got == status:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"{path} still {got} after {timeout}s: {body}"
        await asyncio.sleep(0.1)  # polling the probe with a deadline


async def test_healthz_fails_when_the_poll_loop_stalls_and_readyz_needs_no_partitions(
    bootstrap: str, unique: str, receiver: Receiver
) -> None:
    topic = f"{unique}.events"
    ports = [free_port() for _ in range(3)]
    dispatcher = {"http_host": "127.0.0.1", "stall_timeout": STALL_TIMEOUT, "drain_timeout": 1}
    # Two partitions in all (the source topic and one retry tier) for three members: one owns none.
    first, second, third = (
        engine_settings(
            bootstrap,
            unique,
            partitions=1,
            retry={"tiers": [0.5]},
            dispatcher={**dispatcher, "http_port": port},
        )
        for port in ports
    )
    create_engine_topics(first, [topic])
    await apply(first, [subscription("s", receiver.url, [topic])])
    async with running(first) as app, running(second) as app2, running(third) as app3:
        apps = (app, app2, app3)
        for port in ports:
            await wait_status(port, "/readyz", 200, 30)
        deadline = time.monotonic() + 30
        while sum(a.main.consumer.assigned for a in apps if a.main) != 2:
            assert time.monotonic() < deadline, "the group did not settle"
            await asyncio.sleep(0.2)  # waiting for the assignment with a deadline
        assert min(a.main.consumer.assigned for a in apps if a.main) == 0
        for port in ports:
            assert (await scrape(port, "/readyz"))[0] == 200
            assert (await scrape(port, "/healthz"))[0] == 200

    async with running(first) as app:
        await wait_status(ports[0], "/readyz", 200, 30)
        assert app.main is not None
        app.main.consumer.stall(STALL_TIMEOUT + 3)
        took = await wait_status(ports[0], "/healthz", 503, STALL_TIMEOUT + 2)
        assert took <= STALL_TIMEOUT + 1.5
        status, body = await scrape(ports[0], "/readyz")
        assert status == 503 and "stalled" in body
        await wait_status(ports[0], "/healthz", 200, 10)


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free now."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


async def test_each_worker_serves_probes_and_metrics_on_its_own_port(
    bootstrap: str, unique: str, receiver: Receiver, tmp_path: Path
) -> None:
    port = free_port_pair()
    settings = engine_settings(
        bootstrap, unique, dispatcher={"http_port": port, "http_host": "127.0.0.1", "workers": 2}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    await apply(settings, [subscription("s", receiver.url, [topic])])
    process = DispatcherProcess(settings, tmp_path / "workers.log")
    process.start()
    try:
        for worker_port in (port, port + 1):
            await wait_status(worker_port, "/readyz", 200, 60)
        produce(settings, topic, events(40))
        await receiver.wait_count(40)
        delivered = 0.0
        for worker_port in (port, port + 1):
            status, text = await scrape(worker_port)
            assert status == 200 and "fanout_build_info" in text
            delivered += total(parse_scrape(text), "fanout_deliveries_total", outcome="delivered")
        assert delivered == len(receiver.requests) == 40, "the workers' counters add up"
    finally:
        code = process.terminate()
        process.close()
    assert code == 0
    workers = {
        orjson.loads(line).get("worker") for line in process.log().splitlines() if line.startswith("{")
    }
    assert {0, 1} <= workers
