"""Lanes: a rate-limited subscription stays under its rate without slowing the others; a slow endpoint
does not hold back a fast one."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from fanout.model.event import Delivery
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


class LoopStalls:
    """The longest the running event loop was late to a 10 ms timer while this runs (seconds)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - before - 0.01)

    def __enter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_rate_limited_subscription_and_an_unlimited_one(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 200
    started: list[float] = []  # when each request to the limited endpoint started (the limiter's output)
    async with Receiver() as limited, Receiver() as free:
        await apply(
            settings,
            [
                subscription("limited", limited.url, [topic], rate_limit={"per_second": 20, "burst": 5}),
                subscription("free", free.url, [topic]),
            ],
        )
        async with running(settings) as app:
            assert app.main is not None
            lanes = app.main.dispatcher.lanes
            send = lanes.send

            async def observed(delivery: Delivery) -> None:
                if delivery.subscription.id == "limited":
                    started.append(time.monotonic())
                await send(delivery)

            lanes.send = observed
            with LoopStalls() as stalls:
                start = time.time()
                await asyncio.to_thread(produce, settings, topic, events(n))
                await free.wait_count(n, 30)
                free_done = time.time() - start
                await limited.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 60)
                limited_done = time.time() - start

    # What fanout controls: requests start at most at the rate plus the burst. A request starts in the loop
    # iteration after its token was taken, so a stall of the loop can bunch starts too: the loop's worst
    # stall is allowed on top, and one token of slack for the clock reads.
    for window in (0.5, 1.0, 2.0, 5.0):
        allowed = 20 * (window + stalls.worst) + 5 + 1
        assert max_in_window(started, window) <= allowed, (
            f"more than {allowed} requests started in {window}s (loop stalled at most {stalls.worst:.3f}s)"
        )
    # What the endpoint sees: the receiver runs in this event loop, so a request can wait for the loop
    # before it is read and arrive bunched with later ones: JITTER plus the loop's worst stall.
    times = [r.at for r in limited.requests]
    for window in (0.5, 1.0, 2.0, 5.0):
        allowed = 20 * (window + JITTER + stalls.worst) + 5
        assert max_in_window(times, window) <= allowed, (
            f"more than {allowed} requests in {window}s (loop stalled at most {stalls.worst:.3f}s)"
        )
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
