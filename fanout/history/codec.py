"""The attempt record as JSON (``schemas/attempt.schema.json``, version 1): ``encode`` and ``decode``.

``encode`` never fails on a record's contents: every string is cut to its bound (``fanout.history.record``)
and bodies are already bounded, so a writer cannot be stopped by a long error message or a hostile
endpoint's content type. ``decode`` trusts nothing: the topic is an input, and whoever can write to it
can write anything. A value that is not a version-1 record of the right shape raises
``MalformedRecord`` naming the first problem (the indexer skips and counts it); fields it does not know
are ignored (a later minor version may add some).
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from fanout.history import record as R
from fanout.history.record import AttemptRecord, Body, Failure, Origin, Outcome, Request, Response, Retry

MAX_RECORD_BYTES = 1024 * 1024
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_OUTCOMES = {o.value: o for o in Outcome}


class MalformedRecord(ValueError):
    """A value of the attempts topic that is not an attempt record this version can read."""


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def _body(body: Body | None) -> dict[str, Any] | None:
    if body is None:
        return None
    return {"text": body.text, "encoding": body.encoding, "size": body.size, "truncated": body.truncated}


def to_json(record: AttemptRecord) -> dict[str, Any]:
    """The record as the JSON object of the schema, every string within its bound."""
    o, rq, rs, e, rt = record.origin, record.request, record.response, record.error, record.retry
    return {
        "version": R.SCHEMA_VERSION,
        "event_id": record.event_id[: R.MAX_ID],
        "event_type": record.event_type[: R.MAX_TYPE],
        "event_time_ms": record.event_time_ms,
        "subscription": record.subscription[: R.MAX_SUBSCRIPTION],
        "attempt": record.attempt,
        "time_ms": record.time_ms,
        "outcome": record.outcome.value,
        "retry": None if rt is None else {"tier": rt.tier, "not_before_ms": rt.not_before_ms},
        "reason": _cut(record.reason, R.MAX_REASON),
        "request": None
        if rq is None
        else {
            "webhook_id": rq.webhook_id[: R.MAX_ID],
            "webhook_timestamp": rq.webhook_timestamp,
            "latency_ms": round(max(0.0, rq.latency_ms), 3),
        },
        "response": None
        if rs is None
        else {
            "status": rs.status,
            "content_type": _cut(rs.content_type, R.MAX_CONTENT_TYPE),
            "body": _body(rs.body),
        },
        "error": None
        if e is None
        else {"class": e.kind[: R.MAX_ERROR_CLASS], "message": e.message[: R.MAX_ERROR_MESSAGE]},
        "origin": None
        if o is None
        else {
            "topic": o.topic[: R.MAX_TOPIC],
            "partition": o.partition,
            "offset": o.offset,
            "timestamp_ms": o.timestamp_ms,
        },
        "trace_id": record.trace_id if record.trace_id and _TRACE_ID.fullmatch(record.trace_id) else None,
        "member": _cut(record.member, R.MAX_MEMBER),
        "payload": _body(record.payload),
    }


def encode(record: AttemptRecord) -> bytes:
    return orjson.dumps(to_json(record))


# -- decoding ------------------------------------------------------------------------------------------
#
# ``checked`` validates the parsed object in place, in straight-line code: the indexer runs it for every
# record of the topic, and ingest builds its rows from the checked object without making a record.


def _bad(field: str, why: str) -> MalformedRecord:
    return MalformedRecord(f"{field}: {why}")


def _int(value: Any, field: str, low: int, high: int) -> None:
    if type(value) is not int:
        raise _bad(field, "not an integer")
    if not low <= value <= high:
        raise _bad(field, "out of range")


def _str(value: Any, field: str, limit: int, minimum: int = 0) -> None:
    if type(value) is not str:
        raise _bad(field, "not a string")
    if not minimum <= len(value) <= limit:
        raise _bad(field, f"length not within {minimum}..{limit}")


def _obj(value: Any, field: str) -> bool:
    """True for an object, False for null; raises for anything else."""
    if value is None:
        return False
    if type(value) is not dict:
        raise _bad(field, "not an object or null")
    return True


def _check_body(b: Any, field: str) -> None:
    if not _obj(b, field):
        return
    if b["encoding"] not in ("utf-8", "base64"):
        raise _bad(field + ".encoding", "not utf-8 or base64")
    _str(b["text"], field + ".text", R.MAX_BODY_CHARS)
    _int(b["size"], field + ".size", 0, R.MAX_INT64)
    if type(b["truncated"]) is not bool:
        raise _bad(field + ".truncated", "not a boolean")


def _check_parts(obj: dict[str, Any]) -> None:
    rq: Any = obj["request"]
    if _obj(rq, "request"):
        _str(rq["webhook_id"], "request.webhook_id", R.MAX_ID, 1)
        _int(rq["webhook_timestamp"], "request.webhook_timestamp", 0, R.MAX_TIME_MS // 1000)
        latency = rq["latency_ms"]
        if type(latency) not in (int, float) or not 0 <= latency < math.inf:
            raise _bad("request.latency_ms", "not a non-negative number")
    rs: Any = obj["response"]
    if _obj(rs, "response"):
        _int(rs["status"], "response.status", 100, 999)
        if rs["content_type"] is not None:
            _str(rs["content_type"], "response.content_type", R.MAX_CONTENT_TYPE)
        _check_body(rs["body"], "response.body")
    e: Any = obj["error"]
    if _obj(e, "error"):
        _str(e["class"], "error.class", R.MAX_ERROR_CLASS)
        _str(e["message"], "error.message", R.MAX_ERROR_MESSAGE)
    o: Any = obj["origin"]
    if _obj(o, "origin"):
        _str(o["topic"], "origin.topic", R.MAX_TOPIC, 1)
        _int(o["partition"], "origin.partition", 0, 2**31 - 1)
        _int(o["offset"], "origin.offset", 0, R.MAX_INT64)
        if o["timestamp_ms"] is not None:
            _int(o["timestamp_ms"], "origin.timestamp_ms", R.MIN_TIME_MS, R.MAX_TIME_MS)
    rt: Any = obj["retry"]
    if _obj(rt, "retry"):
        _int(rt["tier"], "retry.tier", 0, 1000)
        _int(rt["not_before_ms"], "retry.not_before_ms", 0, R.MAX_TIME_MS)


def checked(value: bytes | None) -> dict[str, Any]:
    """The JSON object in ``value`` after checking it is a version-1 record (``MalformedRecord`` if
    not): every field of the schema present, of its type and within its bounds. Fields this version
    does not know are left in it, and ignored by every reader."""
    if not value:
        raise MalformedRecord("empty value")
    if len(value) > MAX_RECORD_BYTES:
        raise MalformedRecord(f"value larger than {MAX_RECORD_BYTES} bytes")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(f"not JSON: {str(exc)[:80]}") from None
    if type(obj) is not dict:
        raise MalformedRecord("not a JSON object")
    try:
        _check(obj)
    except KeyError as exc:
        raise MalformedRecord(f"{exc.args[0]}: missing") from None
    return obj


def _check(obj: dict[str, Any]) -> None:
    version = obj["version"]
    if type(version) is not int or version != R.SCHEMA_VERSION:
        raise _bad("version", f"not {R.SCHEMA_VERSION}")
    outcome = obj["outcome"]
    if type(outcome) is not str or outcome not in _OUTCOMES:
        raise _bad("outcome", "not one of " + ", ".join(_OUTCOMES))
    _str(obj["event_id"], "event_id", R.MAX_ID, 1)
    _str(obj["subscription"], "subscription", R.MAX_SUBSCRIPTION, 1)
    _int(obj["time_ms"], "time_ms", 0, R.MAX_TIME_MS)
    _int(obj["attempt"], "attempt", 0, 1_000_000)
    _str(obj["event_type"], "event_type", R.MAX_TYPE)
    if obj["event_time_ms"] is not None:
        _int(obj["event_time_ms"], "event_time_ms", R.MIN_TIME_MS, R.MAX_TIME_MS)
    if obj["reason"] is not None:
        _str(obj["reason"], "reason", R.MAX_REASON)
    if obj["member"] is not None:
        _str(obj["member"], "member", R.MAX_MEMBER)
    trace_id = obj["trace_id"]
    if trace_id is not None and (type(trace_id) is not str or not _TRACE_ID.fullmatch(trace_id)):
        raise _bad("trace_id", "not 32 lowercase hex digits")
    _check_parts(obj)
    _check_body(obj["payload"], "payload")


def _body_of(b: dict[str, Any] | None) -> Body | None:
    return None if b is None else Body(b["text"], b["encoding"], b["size"], b["truncated"])


def from_json(obj: dict[str, Any]) -> AttemptRecord:
    """The record of an object ``checked`` passed."""
    o, rq, rs, e, rt = (obj.get(k) for k in ("origin", "request", "response", "error", "retry"))
    return AttemptRecord(
        event_id=obj["event_id"],
        subscription=obj["subscription"],
        outcome=_OUTCOMES[obj["outcome"]],
        time_ms=obj["time_ms"],
        attempt=obj["attempt"],
        event_type=obj.get("event_type") or "",
        event_time_ms=obj.get("event_time_ms"),
        origin=None if o is None else Origin(o["topic"], o["partition"], o["offset"], o.get("timestamp_ms")),
        request=None
        if rq is None
        else Request(rq["webhook_id"], rq["webhook_timestamp"], float(rq["latency_ms"])),
        response=None
        if rs is None
        else Response(rs["status"], rs.get("content_type"), _body_of(rs.get("body"))),
        error=None if e is None else Failure(e["class"], e["message"]),
        retry=None if rt is None else Retry(rt["tier"], rt["not_before_ms"]),
        reason=obj.get("reason"),
        trace_id=obj.get("trace_id"),
        member=obj.get("member"),
        payload=_body_of(obj.get("payload")),
    )


def decode(value: bytes | None) -> AttemptRecord:
    """The record in ``value``; ``MalformedRecord`` when it is not one (see the module docstring)."""
    return from_json(checked(value))
