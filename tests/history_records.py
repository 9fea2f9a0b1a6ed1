"""Attempt records for the history tests: one valid record per outcome, and a hypothesis strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from fanout.history.record import (
    AttemptRecord,
    Body,
    Failure,
    Origin,
    Outcome,
    Request,
    Response,
    Retry,
)

SCHEMA = orjson.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "attempt.schema.json").read_bytes()
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
T0 = 1_700_000_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def make(
    outcome: Outcome = Outcome.DELIVERED,
    event_id: str = "evt-1",
    subscription: str = "hook-1",
    time_ms: int = T0,
    attempt: int = 1,
    status: int | None = None,
    latency_ms: float = 12.5,
    **overrides: Any,
) -> AttemptRecord:
    """A record as the dispatcher would write it for ``outcome``: an attempt (request, response) for
    delivered, retry_scheduled and an attempted dead letter (``status`` given); none for the rest."""
    attempted = outcome in (Outcome.DELIVERED, Outcome.RETRY_SCHEDULED) or (
        outcome is Outcome.DEAD_LETTERED and status is not None
    )
    if status is None and attempted:
        status = 200 if outcome is Outcome.DELIVERED else 503
    fields: dict[str, Any] = {
        "event_type": "order.created",
        "event_time_ms": T0 - 1000,
        "origin": Origin("orders", 1, 42, T0 - 900),
        "member": "dispatcher-0",
        "trace_id": TRACE,
    }
    if attempted:
        fields["request"] = Request(event_id, time_ms // 1000, latency_ms)
        assert status is not None
        fields["response"] = Response(status, "text/plain", Body.of(b"ok" if status < 300 else b"nope", 1024))
        if status >= 300:
            fields["error"] = Failure("HTTPStatus", f"HTTP {status}")
    if outcome in (Outcome.RETRY_SCHEDULED, Outcome.SPILLED):
        fields["retry"] = Retry(0, time_ms + 5000)
    if outcome is Outcome.SPILLED:
        fields["reason"] = "circuit open"
    if outcome is Outcome.DEAD_LETTERED:
        fields["reason"] = "retries exhausted"
    if outcome is Outcome.DROPPED:
        fields["reason"] = "subscription deleted"
    if outcome is Outcome.DISABLED:
        fields["reason"] = "subscription disabled"
    fields.update(overrides)
    return AttemptRecord(event_id, subscription, outcome, time_ms, attempt, **fields)


_text = st.text(max_size=300)
_ids = st.text(min_size=1, max_size=300)
_times = st.integers(0, 253_402_300_799_999)
_bodies = st.none() | st.builds(
    Body.of, st.binary(max_size=200), st.integers(0, 300), st.none() | st.integers(0, 10_000)
)
records = st.builds(
    AttemptRecord,
    event_id=_ids,
    subscription=_ids,
    outcome=st.sampled_from(list(Outcome)),
    time_ms=_times,
    attempt=st.integers(0, 1_000_000),
    event_type=_text,
    event_time_ms=st.none() | st.integers(-62_135_596_800_000, 253_402_300_799_999),
    origin=st.none()
    | st.builds(Origin, _ids, st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1), st.none() | _times),
    request=st.none()
    | st.builds(
        Request,
        _ids,
        st.integers(0, 253_402_300_799),
        st.floats(0, 1e9, allow_nan=False, allow_infinity=False),
    ),
    response=st.none() | st.builds(Response, st.integers(100, 999), st.none() | _text, _bodies),
    error=st.none() | st.builds(Failure, st.text(max_size=200), st.text(max_size=2000)),
    retry=st.none() | st.builds(Retry, st.integers(0, 1000), _times),
    reason=st.none() | st.text(max_size=1000),
    trace_id=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | st.text(max_size=40),
    member=st.none() | st.text(max_size=400),
    payload=_bodies,
)
