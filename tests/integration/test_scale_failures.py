"""Failures at scale: a stuck endpoint (memory stays flat, spilled deliveries arrive after it recovers)
and a receiver that refuses connections for two minutes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    rss_kib,
    running,
    subscription,
)
from tests.receivers import Receiver

pytestmark = pytest.mark.slow


def distinct(receiver: Receiver) -> int:
    return len({r.headers["webhook-id"] for r in receiver.requests})


async def test_stuck_endpoint_memory_stays_flat_and_spilled_deliveries_arrive(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = engine_settings(
        bootstrap,
        unique,
        dispatcher={"max_uncommitted": 500},
        delivery={"breaker_cooldown": 2, "breaker_max_cooldown": 16},
        retry={"max_age": 600},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    recovered = asyncio.Event()

    async def stuck_until_recovered(request: web.Request, n: int) -> web.StreamResponse:
        if not recovered.is_set():
            await asyncio.sleep(5)  # never answers within the subscription's 0.5 s timeout
        return web.Response(status=204)

    n = 50_000
    async with Receiver(stuck_until_recovered) as stuck, Receiver() as healthy:
        await apply(
            settings,
            [
                subscription("stuck", stuck.url, [topic], timeout=0.5, retry={"schedule": [1] * 50}),
                subscription("healthy", healthy.url, [topic]),
            ],
        )
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        try:
            process.start()
            producing = asyncio.create_task(asyncio.to_thread(produce, settings, topic, events(n)))
            await healthy.wait_count(5000, 120)
            assert process.proc is not None
            rss_early = rss_kib(process.proc.pid)
            await healthy.wait_for(lambda reqs: distinct(healthy) == n, 300)
            rss_late = rss_kib(process.proc.pid)
            await producing
            stuck_before_recovery = distinct(stuck)
            recovered.set()
            await stuck.wait_for(lambda reqs: distinct(stuck) == n, 300)
        except BaseException:
            print(process.log()[-5000:])
            raise
        finally:
            process.close()
    growth_mib = (rss_late - rss_early) / 1024
    print(
        f"rss at 5000: {rss_early / 1024:.1f} MiB, at {n}: {rss_late / 1024:.1f} MiB, +{growth_mib:.1f} MiB"
    )
    assert growth_mib < 50
    assert stuck_before_recovery < n // 10, "the stuck endpoint could not have taken many before it recovered"
    assert distinct(healthy) == n


async def test_receiver_refusing_connections_for_two_minutes_gets_everything_later(
    bootstrap: str, unique: str
) -> None:
    settings = engine_settings(
        bootstrap, unique, delivery={"breaker_cooldown": 1, "breaker_max_cooldown": 8}, retry={"max_age": 600}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = 500
    async with Receiver() as healthy:
        outage_url = f"http://127.0.0.1:{port}/hook"
        await apply(
            settings,
            [
                subscription("down", outage_url, [topic], retry={"schedule": [1, 2, 4, 8] + [10] * 30}),
                subscription("healthy", healthy.url, [topic]),
            ],
        )
        async with running(settings) as app:
            start = time.time()
            produce(settings, topic, events(n))
            await healthy.wait_count(n, 30)
            healthy_done = time.time() - start
            await asyncio.sleep(max(0.0, 120 - (time.time() - start)))  # the outage itself: two minutes
            assert app.counts.totals()["delivered"] == n, "nothing reached the refusing receiver"
            async with Receiver(port=port) as back:
                await back.wait_for(lambda reqs: distinct(back) == n, 120)
                came_back = time.time() - start
    assert healthy_done < 10, f"the healthy receiver was slowed by the outage: {healthy_done:.1f}s"
    assert came_back > 120
    assert distinct(healthy) == n
