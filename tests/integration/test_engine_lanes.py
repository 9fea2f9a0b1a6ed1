"""Lanes: a rate-limited subscription stays under its rate without slowing the others; a slow endpoint
does not hold back a fast one."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    running,
    subscription,
)
from tests.receivers import Receiver

JITTER = 0.1


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_rate_limited_subscription_and_an_unlimited_one(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 200
    async with Receiver() as limited, Receiver() as free:
        await apply(
            settings,
            [
                subscription("limited", limited.url, [topic], rate_limit={"per_second": 20, "burst": 5}),
                subscription("free", free.url, [topic]),
            ],
        )
        async with running(settings):
            start = time.time()
            produce(settings, topic, events(n))
            await free.wait_count(n, 30)
            free_done = time.time() - start
            await limited.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 60)
            limited_done = time.time() - start

    times = [r.at for r in limited.requests]
    # Measured at the receiver, so sends that the event loop delayed a little can arrive bunched with
    # later ones: JITTER seconds of tokens are allowed on top of the rate and the burst.
    for window in (0.5, 1.0, 2.0, 5.0):
        allowed = 20 * (window + JITTER) + 5
        assert max_in_window(times, window) <= allowed, f"more than {allowed} requests in {window}s"
    assert limited_done >= (n - 5) / 20 * 0.9, "200 events at 20/s cannot arrive faster than ~10s"
    assert free_done < 5, f"the unlimited subscription was slowed: {free_done:.1f}s for {n} events"
    assert len({r.headers["webhook-id"] for r in free.requests}) == n


async def test_slow_endpoint_does_not_hold_back_a_fast_one(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    async def two_seconds(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.Response(status=204)

    n = 100
    async with Receiver(two_seconds) as slow, Receiver() as fast:
        await apply(
            settings,
            [
                subscription("slow", slow.url, [topic], max_in_flight=16, timeout=10),
                subscription("fast", fast.url, [topic]),
            ],
        )
        async with running(settings):
            start = time.time()
            produce(settings, topic, events(n))
            await fast.wait_count(n, 30)
            fast_done = time.time() - start
            slow_by_then = len(slow.requests)
            await slow.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 120)
    assert fast_done < 3, f"the fast endpoint waited for the slow one: {fast_done:.1f}s"
    assert slow_by_then <= 32, "the slow endpoint cannot have answered many requests by then"
    assert len({r.headers["webhook-id"] for r in fast.requests}) == n
