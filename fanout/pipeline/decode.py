"""decode: a Kafka record → ``Event``, or ``PoisonRecord`` with the reason.

Accepted shapes:
- CloudEvents Kafka binary mode: ``ce_type`` (and ``ce_id``, ``ce_source``, ``ce_time``, extensions) in
  the headers, the data in the value. Routing then needs no JSON parse.
- CloudEvents structured JSON: an object with ``specversion`` and ``type``.
- The simple shape: ``{"event": "user_registered", "data": {...}, "id"?: "...", "timestamp"?: ...}``.

An event without an id gets a deterministic one from (topic, partition, offset), so re-reads and
retries carry the same ``webhook-id``.

Values that reach a subscriber's request headers are kept only when their syntax is valid
(``wire_syntax``): ``traceparent`` and ``tracestate`` (from ``ce_`` headers, plain record headers or
structured attributes) and the content type (``ce_datacontenttype`` or the record's ``content-type``;
else ``application/json``). An invalid one is dropped, the event is still delivered, and the drop is
counted in ``dropped`` (by attribute name) when the caller passes a counter. A ``tracestate`` without
a valid ``traceparent`` is dropped too (W3C: it means nothing alone).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson

from fanout.model import wire_syntax
from fanout.model.errors import PoisonRecord
from fanout.model.event import Event, Headers
from fanout.model.subscription import HEADER_CONTROL_CHARACTERS

MAX_TYPE_LENGTH = 256
EARLIEST_TIME = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
CE_PREFIX = "ce_"
_CE_CORE = frozenset({"specversion", "id", "type", "time", "data", "data_base64", "datacontenttype"})
DEFAULT_CONTENT_TYPE = "application/json"
_CHECKED = (
    ("traceparent", wire_syntax.traceparent),
    ("tracestate", wire_syntax.tracestate),
    ("content-type", wire_syntax.media_type),
    ("datacontenttype", wire_syntax.media_type),
)
_CHECKED_NAMES = frozenset(name for name, _ in _CHECKED)


def derived_id(topic: str, partition: int, offset: int) -> str:
    digest = hashlib.blake2b(f"{topic}\x00{partition}\x00{offset}".encode(), digest_size=12).hexdigest()
    return f"evt_{digest}"


def parse_time(value: Any, fallback: float) -> float:
    """ISO 8601 text or epoch seconds/milliseconds → epoch seconds; ``fallback`` when absent or bad.

    Times outside years 1 to 9999 (UTC) are bad: the standard payload renders the time as ISO 8601.
    """
    seconds = _epoch_seconds(value)
    if seconds is None or not EARLIEST_TIME <= seconds <= LATEST_TIME:
        return fallback
    return seconds


def _epoch_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else float(value)
        return seconds if math.isfinite(seconds) else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        try:
            return parsed.timestamp()
        except (OverflowError, ValueError, OSError):
            return None
    return None


def _check_type(event_type: Any, where: str) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise PoisonRecord(f"no event type: {where} is missing or not a non-empty string")
    if len(event_type) > MAX_TYPE_LENGTH:
        raise PoisonRecord(f"event type longer than {MAX_TYPE_LENGTH} characters")
    return event_type


def _check_id(event_id: str) -> str:
    """The id becomes the ``webhook-id`` header: control characters could never be sent."""
    if HEADER_CONTROL_CHARACTERS.search(event_id):
        raise PoisonRecord("event id contains a control character")
    return event_id


def _header_attributes(headers: Headers) -> tuple[dict[str, str], dict[str, str]]:
    """(CloudEvents attributes from ``ce_*`` headers, other headers), values decoded as UTF-8."""
    ce: dict[str, str] = {}
    other: dict[str, str] = {}
    for name, raw in headers:
        text = raw.decode("utf-8", "replace") if raw is not None else ""
        if name.startswith(CE_PREFIX):
            ce[name[len(CE_PREFIX) :]] = text
        else:
            other[name.lower()] = text
    return ce, other


def _checked(attributes: dict[str, str], dropped: Counter[str] | None) -> dict[str, str]:
    """``attributes`` without the header-bound values whose syntax is invalid (counted in ``dropped``)."""
    if _CHECKED_NAMES.isdisjoint(attributes):  # most headers (a tenant, say) are none of them
        return attributes
    for name, check in _CHECKED:
        value = attributes.get(name)
        if value is None:
            continue
        valid = check(value)
        if valid is None:
            del attributes[name]
            if dropped is not None:
                dropped[name] += 1
        elif valid is not value:
            attributes[name] = valid
    return attributes


def _paired(attributes: dict[str, str], dropped: Counter[str] | None) -> dict[str, str]:
    if "tracestate" in attributes and "traceparent" not in attributes:
        del attributes["tracestate"]
        if dropped is not None:
            dropped["tracestate"] += 1
    return attributes


def decode(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    timestamp: float,
    event_id: str | None = None,
    dropped: Counter[str] | None = None,
) -> Event:
    """Decode one record. ``timestamp`` is the record's time (epoch seconds), the fallback event time;
    ``dropped`` counts the attributes dropped for invalid syntax."""
    headers = headers or []
    value = value or b""
    ce, other = _header_attributes(headers) if headers else ({}, {})
    if other:
        _checked(other, dropped)
    if "type" in ce:
        _checked(ce, dropped)
        attributes = _paired({**other, **ce}, dropped)
        return Event(
            id=event_id or _check_id(ce.get("id") or derived_id(topic, partition, offset)),
            type=_check_type(ce["type"], "header ce_type"),
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            time=parse_time(ce.get("time"), timestamp),
            value=value,
            headers=headers,
            attributes=attributes,
            content_type=ce.get("datacontenttype") or other.get("content-type") or DEFAULT_CONTENT_TYPE,
        )
    if not value:
        raise PoisonRecord("empty record: no value and no ce_type header")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonRecord(f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PoisonRecord(f"JSON is a {type(body).__name__}, not an object")
    if "specversion" in body:
        event_type = _check_type(body.get("type"), "CloudEvents attribute 'type'")
        extensions = {k: v for k, v in body.items() if k not in _CE_CORE and isinstance(v, str)}
        attributes = _paired({**other, **_checked(extensions, dropped)}, dropped)
        data = body.get("data")
        if data is None and "data_base64" in body:
            data = body["data_base64"]
        given_id = body.get("id")
    else:
        event_type = _check_type(body.get("event"), "field 'event'")
        attributes = _paired(other, dropped)
        data = body.get("data")
        given_id = body.get("id")
    if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, str | int)):
        raise PoisonRecord("field 'id' must be a string")
    return Event(
        id=event_id
        or _check_id(str(given_id) if given_id not in (None, "") else derived_id(topic, partition, offset)),
        type=event_type,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        time=parse_time(body.get("time") if "specversion" in body else body.get("timestamp"), timestamp),
        value=value,
        headers=headers,
        attributes=attributes,
        data=data,
        data_parsed=True,
        content_type=other.get("content-type") or DEFAULT_CONTENT_TYPE,
    )
