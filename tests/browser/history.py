"""Attempt records for the browser tests, written to the real attempts topic and read back by the
history indexer of the API the console runs in (``tests.browser.console.running_console``).

Where a test needs a known mix of outcomes over hours (``sample``) or a fixed event's history
(``retried_once``), it writes the records itself; a test that runs a dispatcher reads the records the
dispatcher wrote."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from fanout.config import Settings
from fanout.history.codec import encode
from fanout.history.record import AttemptRecord, Failure, Outcome, Request, Retry
from tests.browser.console import history_of
from tests.history_records import make
from tests.integration.api import Client
from tests.integration.engine import produce_records

INDEX_TIMEOUT = 60.0


def write_attempts(settings: Settings, records: Iterable[AttemptRecord]) -> int:
    """Produce ``records`` to the attempts topic (key = event id), every one acknowledged."""
    return produce_records(
        settings, settings.topics.attempts, ((r.event_id.encode(), encode(r), None) for r in records)
    )


async def indexed(api: Client, n: int, timeout: float = INDEX_TIMEOUT) -> None:
    """Wait until the running API's history indexer has indexed ``n`` records."""
    store = history_of(api)
    deadline = time.monotonic() + timeout
    while store.indexed < n:
        assert time.monotonic() < deadline, f"{store.indexed} of {n} attempt records indexed after {timeout}s"
        await asyncio.sleep(0.05)


def _failed(
    event_id: str, sub: str, time_ms: int, outcome: Outcome, error: str, reason: str | None = None
) -> AttemptRecord:
    return make(
        outcome,
        event_id,
        sub,
        time_ms,
        1,
        None,
        request=Request(event_id, time_ms // 1000, 3000.0),
        response=None,
        error=Failure(error, "no answer"),
        retry=Retry(0, time_ms + 5000) if outcome is Outcome.RETRY_SCHEDULED else None,
        reason=reason,
    )


def sample(now_ms: int) -> list[AttemptRecord]:
    """``healthy``: 40 delivered in the last hour (and one two hours ago); ``flaky``: 20, every third
    one failed (500) and scheduled for a retry; ``failing``: its latest 6 attempts all timed out, the
    last two dead-lettered."""
    out = [
        make(
            Outcome.DELIVERED,
            f"h{i}",
            "healthy",
            now_ms - 3_000_000 + i * 60_000,
            1,
            204,
            latency_ms=10.0 + i,
        )
        for i in range(40)
    ]
    out.append(make(Outcome.DELIVERED, "old", "healthy", now_ms - 7_200_000, 1, 204, latency_ms=5.0))
    for i in range(20):
        failed = i % 3 == 0
        outcome = Outcome.RETRY_SCHEDULED if failed else Outcome.DELIVERED
        out.append(
            make(
                outcome,
                f"f{i}",
                "flaky",
                now_ms - 2_400_000 + i * 90_000,
                1,
                500 if failed else 200,
                30.0 + i,
            )
        )
    for i in range(6):
        dead = i >= 4
        outcome = Outcome.DEAD_LETTERED if dead else Outcome.RETRY_SCHEDULED
        reason = "retries exhausted" if dead else None
        out.append(
            _failed(f"x{i}", "failing", now_ms - 600_000 + i * 60_000, outcome, "ConnectTimeout", reason)
        )
    return out


def retried_once(event_id: str, sub: str, now_ms: int) -> list[AttemptRecord]:
    """``event_id`` failed once (HTTP 500) for ``sub`` and was delivered on its retry."""
    return [
        make(Outcome.RETRY_SCHEDULED, event_id, sub, now_ms - 90_000, 1, 500, latency_ms=40.0),
        make(Outcome.DELIVERED, event_id, sub, now_ms - 30_000, 2, 204, latency_ms=12.0),
    ]
