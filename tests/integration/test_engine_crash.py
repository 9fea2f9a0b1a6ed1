"""At-least-once across kill -9, and a graceful stop that commits what it finished (real processes)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path

from aiohttp import web

from tests.integration.engine import (
    DispatcherProcess,
    apply,
    committed_total,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    subscription,
)
from tests.receivers import Receiver


async def test_kill_9_loses_nothing_and_duplicates_stay_under_the_bound(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("FANOUT_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    partitions, bound = 3, 200
    settings = engine_settings(
        bootstrap,
        unique,
        partitions=partitions,
        dispatcher={"max_uncommitted": bound, "session_timeout_ms": 6000},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 5000
    kill_after = rng.randint(500, 4000)
    async with Receiver() as a, Receiver() as b:
        await apply(settings, [subscription("a", a.url, [topic]), subscription("b", b.url, [topic])])
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        try:
            await asyncio.to_thread(produce, settings, topic, events(n))
            process.start()
            await a.wait_count(kill_after, 60)
            committed_before = await asyncio.to_thread(committed_total, settings, [topic])
            process.kill()
            received_at_kill = len(a.requests)
            process.start()
            for receiver in (a, b):
                await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 120)
        except BaseException:
            print(process.log())
            raise
        finally:
            process.close()
    duplicates = {name: len(r.requests) - n for name, r in (("a", a), ("b", b))}
    print(f"seed={seed} killed after {received_at_kill} deliveries to a; duplicates={duplicates}")
    assert committed_before > 0, "offsets were committed before the kill"
    for name, receiver in (("a", a), ("b", b)):
        assert {r.headers["webhook-id"] for r in receiver.requests} == {f"e{i}" for i in range(n)}
        assert duplicates[name] <= bound * partitions, f"seed={seed}: {duplicates[name]} duplicates at {name}"


async def test_sigterm_finishes_in_flight_commits_and_a_restart_resends_nothing(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    completed: Counter[str] = Counter()

    async def half_a_second(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        completed[request.headers["webhook-id"]] += 1
        return web.Response(status=204)

    async with Receiver(half_a_second) as receiver:
        await apply(settings, [subscription("slowish", receiver.url, [topic], max_in_flight=10, timeout=5)])
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        try:
            await asyncio.to_thread(produce, settings, topic, events(100))
            process.start()
            await receiver.wait_count(20, 60)
            code = await asyncio.to_thread(process.terminate, 60)
            assert code == 0, "a graceful stop exits 0"
            assert all(n == 1 for n in completed.values())
            sent_before = {r.headers["webhook-id"] for r in receiver.requests}
            assert sent_before <= set(completed), "every request in flight at SIGTERM was answered"
            finished_first_run = len(completed)

            process.start()
            await asyncio.to_thread(produce, settings, topic, events(10, start=100))
            await receiver.wait_for(lambda reqs: {f"e{i}" for i in range(110)} <= set(completed), 60)
        except BaseException:
            print(process.log())
            raise
        finally:
            process.close()
    assert "dispatcher stopped" in process.log()
    resent = [event_id for event_id, n in completed.items() if n > 1]
    assert resent == [], f"a restart re-sent events completed before SIGTERM: {resent}"
    assert finished_first_run >= 20
