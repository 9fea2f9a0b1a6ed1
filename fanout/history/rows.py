"""How an attempt record is laid out in the index: the columns the queries filter and sort on, and the
rest as a compact positional JSON array (``detail``). A private format: a change bumps
``schema.STORE_VERSION`` and the index is rebuilt from the topic."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from fanout.history.record import (
    OUTCOMES,
    AttemptRecord,
    Body,
    Failure,
    Origin,
    Outcome,
    Request,
    Response,
    Retry,
)

OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}
CODE_OF = {o.value: i for i, o in enumerate(OUTCOMES)}  # by the outcome's JSON name
FAILED = tuple(int(o.failed) for o in OUTCOMES)
DELIVERED = OUTCOME_CODE[Outcome.DELIVERED]

# attempts(event_key, sub, time_ms, outcome, failed, attempt, status, latency_us, detail)
Row = tuple[int, int, int, int, int, int, int | None, int | None, bytes]
COLUMNS = "id, time_ms, outcome, attempt, status, latency_us, detail, sub"


def event_key(event_id: str) -> int:
    """A signed 64-bit hash of the event id: what the event index holds (8 bytes, not the id's ~40)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


def _body(b: dict[str, Any] | None) -> list[Any] | None:
    return None if b is None else [b["text"], b["encoding"], b["size"], b["truncated"]]


def _unbody(v: list[Any] | None) -> Body | None:
    return None if v is None else Body(v[0], v[1], v[2], v[3])


def to_row(r: dict[str, Any], sub: int, code: int) -> Row:
    """The row of a record object ``fanout.history.codec.checked`` passed, whose outcome is
    ``OUTCOMES[code]``. The webhook-id is stored once when it is the event id (as fanout writes it)."""
    event_id, o, rq, rs, e, rt = (
        r["event_id"],
        r["origin"],
        r["request"],
        r["response"],
        r["error"],
        r["retry"],
    )
    detail = orjson.dumps(
        [
            event_id,
            r["event_type"],
            r["event_time_ms"],
            None if o is None else [o["topic"], o["partition"], o["offset"], o["timestamp_ms"]],
            None
            if rq is None
            else [None if rq["webhook_id"] == event_id else rq["webhook_id"], rq["webhook_timestamp"]],
            None if rs is None else [rs["content_type"], _body(rs["body"])],
            None if e is None else [e["class"], e["message"]],
            None if rt is None else [rt["tier"], rt["not_before_ms"]],
            r["reason"],
            r["trace_id"],
            r["member"],
            _body(r["payload"]),
        ]
    )
    return (
        event_key(event_id),
        sub,
        r["time_ms"],
        code,
        FAILED[code],
        r["attempt"],
        None if rs is None else rs["status"],
        None if rq is None else round(rq["latency_ms"] * 1000),
        detail,
    )


def from_row(
    subscription: str,
    time_ms: int,
    outcome: int,
    attempt: int,
    status: int | None,
    latency_us: int | None,
    detail: bytes,
) -> AttemptRecord:
    d = orjson.loads(detail)
    o, rq, rs, e, rt = d[3], d[4], d[5], d[6], d[7]
    return AttemptRecord(
        event_id=d[0],
        subscription=subscription,
        outcome=OUTCOMES[outcome],
        time_ms=time_ms,
        attempt=attempt,
        event_type=d[1],
        event_time_ms=d[2],
        origin=None if o is None else Origin(o[0], o[1], o[2], o[3]),
        request=None if rq is None else Request(rq[0] or d[0], rq[1], (latency_us or 0) / 1000),
        response=None if rs is None or status is None else Response(status, rs[0], _unbody(rs[1])),
        error=None if e is None else Failure(e[0], e[1]),
        retry=None if rt is None else Retry(rt[0], rt[1]),
        reason=d[8],
        trace_id=d[9],
        member=d[10],
        payload=_unbody(d[11]),
    )


def event_id_of(detail: bytes) -> str:
    """The event id in a ``detail`` blob (the event index holds only its hash)."""
    value = orjson.loads(detail)[0]
    return value if isinstance(value, str) else ""
