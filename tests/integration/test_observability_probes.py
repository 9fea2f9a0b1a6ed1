"""Probes: ``/readyz`` once joined (also for a member that owns no partition), ``/healthz`` failing
within ``dispatcher.stall_timeout`` when the poll loop stalls (test hook), and recovering after."""

from __future__ import annotations

import asyncio
import time

from tests.integration.engine import apply, create_engine_topics, engine_settings, running, subscription
from tests.integration.test_observability_metrics import free_port, scrape
from tests.receivers import Receiver

STALL_TIMEOUT = 2.0


async def wait_status(port: int, path: str, status: int, timeout: float) -> float:
    """Poll ``path`` until it answers ``status``; return how long that took."""
    start = time.monotonic()
    while True:
        got, body = await scrape(port, path)
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
