"""The history as JSON: what ``GET /v1/events/{id}``, ``.../attempts`` and ``.../stats`` answer and what
the CLI prints with ``--json`` (schemas/openapi.yaml: ``EventHistory``, ``AttemptPage``,
``SubscriptionStats``; each attempt is an attempt record, ``schemas/attempt.schema.json``).

Payloads: a record keeps the first ``history.payload_bytes`` of the event (the dispatcher's setting
when it wrote it); the reader's own ``history.payload_bytes`` caps what is shown (0 shows none), so
a replica configured to show no payloads shows none whatever the topic holds. An event's payload is
shown once, on the event, not on each of its records.

Windows are ``<n>m``, ``<n>h`` or ``<n>d`` between ``MIN_WINDOW`` and ``MAX_WINDOW`` seconds; a time
series splits one into at most ``MAX_BUCKETS`` steps of whole minutes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from fanout.history.codec import to_json
from fanout.history.queries import AttemptPage, EventHistory
from fanout.history.record import AttemptRecord, Body, Origin
from fanout.history.stats import Point, SubscriptionStats, Totals

MIN_WINDOW = 60
MAX_WINDOW = 31 * 86400
MAX_BUCKETS = 500
WINDOW_PATTERN = r"^[1-9][0-9]{0,4}[mhd]$"
_WINDOW = re.compile(WINDOW_PATTERN)
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def window_seconds(text: str) -> int:
    """The seconds of a window such as ``5m``, ``1h``, ``24h``, ``7d`` (``ValueError`` otherwise)."""
    if not _WINDOW.fullmatch(text):
        raise ValueError("a window is a whole number of minutes, hours or days: 5m, 1h, 24h, 7d")
    seconds = int(text[:-1]) * _UNIT[text[-1]]
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise ValueError(f"a window is between 1m and {MAX_WINDOW // 86400}d")
    return seconds


def step_seconds(window_s: int, buckets: int) -> int:
    """The step of a series of about ``buckets`` points over ``window_s``: whole minutes, at least one."""
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets is between 1 and {MAX_BUCKETS}")
    return max(1, math.ceil(window_s / buckets / 60)) * 60


def capped(body: Body | None, limit: int) -> Body | None:
    """``body`` cut to ``limit`` bytes (None when ``limit`` is 0)."""
    if body is None or limit <= 0:
        return None
    raw = body.raw()
    return body if len(raw) <= limit else Body.of(raw, limit, size=body.size)


def _body(body: Body | None) -> dict[str, Any] | None:
    if body is None:
        return None
    return {"text": body.text, "encoding": body.encoding, "size": body.size, "truncated": body.truncated}


def _origin(origin: Origin | None) -> dict[str, Any] | None:
    if origin is None:
        return None
    return {
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "timestamp_ms": origin.timestamp_ms,
    }


def record_json(record: AttemptRecord, payload_bytes: int) -> dict[str, Any]:
    """The record as the attempts topic holds it (schema version 1), its payload capped."""
    if record.payload is not None:
        record = dataclasses.replace(record, payload=capped(record.payload, payload_bytes))
    return to_json(record)


def event_json(history: EventHistory, payload_bytes: int) -> dict[str, Any]:
    return {
        "event_id": history.event_id,
        "event_type": history.event_type,
        "event_time_ms": history.event_time_ms,
        "origin": _origin(history.origin),
        "payload": _body(capped(history.payload, payload_bytes)),
        "subscriptions": [
            {
                "subscription": sub.subscription,
                "state": sub.state,
                "retry_at_ms": sub.until_ms if sub.state == "retry_pending" else None,
                "attempted": sum(1 for r in sub.attempts if r.attempted),
                "attempts": [record_json(r, 0) for r in sub.attempts],
            }
            for sub in history.subscriptions
        ],
    }


def page_json(page: AttemptPage, payload_bytes: int) -> dict[str, Any]:
    return {"items": [record_json(r, payload_bytes) for r in page.attempts], "next_cursor": page.next_cursor}


def totals_json(totals: Totals) -> dict[str, Any]:
    return {
        "counts": {str(outcome): n for outcome, n in totals.counts.items()},
        "attempted": totals.attempted,
        "failed": totals.failed,
        "success_rate": totals.success_rate,
        "latency_ms": totals.percentiles(),
    }


def stats_json(
    stats: SubscriptionStats, window: str, series: list[Point] | None = None, step_s: int | None = None
) -> dict[str, Any]:
    streak = stats.streak
    return {
        "subscription": stats.subscription,
        "window": window,
        "since_ms": stats.since_ms,
        "until_ms": stats.until_ms,
        **totals_json(stats.totals),
        "last_success_ms": stats.last_success_ms,
        "last_failure_ms": stats.last_failure_ms,
        "failure_streak": None
        if streak is None
        else {
            "failures": streak.failures,
            "first_ms": streak.first_ms,
            "last_ms": streak.last_ms,
            "ongoing": streak.ongoing,
            "capped": streak.capped,
        },
        "step_s": step_s if series is not None else None,
        "series": None
        if series is None
        else [{"start_ms": p.start_ms, **totals_json(p.totals)} for p in series],
    }
