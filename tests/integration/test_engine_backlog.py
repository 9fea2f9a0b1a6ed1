"""Backlogs drain at their lane's pace (issue 13, defect 2).

A rate-limited subscription that finds a backlog sends at its limit, each delivery spilled to a retry
tier at most once; and a busy process (every core loaded by another process) slows delivery down
instead of spilling a healthy endpoint's backlog until ``max_age`` dead-letters it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fanout.config import RetrySettings
from tests.integration.backlog import paced_backlog, spill_records
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

pytestmark = pytest.mark.slow

BUSY_LOOP = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass"
)


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """One bounded busy loop per core, in other processes, for the length of the test (at most 5 min)."""
    burners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, "300"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(10)


async def test_a_rate_limited_backlog_drains_at_its_limit_spilling_each_delivery_at_most_once(
    bootstrap: str, unique: str
) -> None:
    # The production tiers: the first is 5 s, so a delivery bouncing through it would show.
    settings = engine_settings(bootstrap, unique, retry={"tiers": RetrySettings().tiers})
    result = await paced_backlog(settings, n=500, per_second=10)
    print(result.summary())
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.drain_rate >= 0.8 * 10, result.summary()
    assert result.most_spills <= 1, result.summary()
    assert result.stats.get("spilled", 0) <= 500
    assert result.stats.get("dead_lettered", 0) == 0


async def test_a_busy_process_delivers_a_healthy_backlog_without_dead_letters(
    bootstrap: str, unique: str, cpu_load: None
) -> None:
    settings = engine_settings(bootstrap, unique, retry={"max_age": 10})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 20_000
    produce(settings, topic, events(n))
    async with Receiver() as first, Receiver() as second:
        await apply(
            settings,
            [subscription("first", first.url, [topic]), subscription("second", second.url, [topic])],
        )
        async with running(settings) as app:
            start = time.monotonic()
            for receiver in (first, second):
                await receiver.wait_for(
                    lambda reqs: (
                        len({r.headers["webhook-id"] for r in reqs}) == n
                        or app.counts.totals()["dead_lettered"] > 0
                    ),
                    240,
                )
            elapsed = time.monotonic() - start
            stats = dict(app.counts.totals())
            reasons = dict(app.counts.dead_letters)
    print(f"{2 * n} deliveries under load in {elapsed:.1f}s: {stats}, dead letters {reasons}")
    assert stats.get("dead_lettered", 0) == 0, reasons
    assert not any(kind == "max_age_exceeded" for _, kind in reasons)
    for receiver in (first, second):
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == n
    for sub_id in ("first", "second"):  # spilled or not, never twice for the same reason
        spills = spill_records(settings, sub_id)
        assert max(spills.values(), default=0) <= 1, spills.most_common(3)
