"""Dead letters as people read them: a filter, the view of one record
(``schemas/dead-letter.schema.json``), and browsing the dead-letter topic a page at a time.

The view takes everything from the record's ``fanout-*`` headers (see ``fanout.model.headers``): reason,
attempts, last status and error, origin, first attempt; and shows the payload as text, truncated.

**Browse** reads a page of the matching dead letters, oldest first (``fanout.kafka.pages``: per
partition from the cursor or ``since`` to ``until`` or the end when the browse began, at most ``limit``
matches a partition, ``SCAN_BUDGET`` records in all). The next cursor holds, per partition, the first
match not shown or where the read stopped, so paging never skips or repeats a record; it is opaque to
callers (URL-safe base64 of a JSON object), and one this API did not make is ``BadCursor``.
Replaying dead letters is ``fanout.control.replays``'s.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from fanout.config import Settings
from fanout.kafka.pages import read_page
from fanout.kafka.ranges import RangeRecord
from fanout.model import headers as H
from fanout.model.errors import FanoutError
from fanout.model.event import Headers, iso_time

PAYLOAD_PREVIEW = 4096


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: all given conditions must hold. Times are epoch milliseconds of the
    dead-letter record (when it was dead-lettered); ``since`` inclusive, ``until`` exclusive."""

    subscription: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    ids: frozenset[tuple[int, int]] | None = None
    event_ids: frozenset[str] | None = None
    partitions: frozenset[int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.ids is not None:
            object.__setattr__(self, "partitions", frozenset(p for p, _ in self.ids))

    def matches(self, partition: int, offset: int, timestamp_ms: int, headers: Headers | None) -> bool:
        if self.ids is not None and (partition, offset) not in self.ids:
            return False
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and timestamp_ms >= self.until_ms:
            return False
        if self.subscription is None and self.event_ids is None:
            return True
        h = H.as_dict(headers)
        if self.subscription is not None and h.get(H.SUBSCRIPTION) != self.subscription:
            return False
        return self.event_ids is None or h.get(H.EVENT_ID) in self.event_ids


def _int(h: dict[str, str], name: str) -> int | None:
    text = h.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        return iso_time(ms / 1000)
    except (OverflowError, OSError, ValueError):
        return None


def view(
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    preview: int = PAYLOAD_PREVIEW,
) -> dict[str, Any]:
    h = H.as_dict(headers)
    origin_partition, origin_offset = _int(h, H.ORIGIN_PARTITION), _int(h, H.ORIGIN_OFFSET)
    origin = None
    if H.ORIGIN_TOPIC in h and origin_partition is not None and origin_offset is not None:
        origin = {
            "topic": h[H.ORIGIN_TOPIC],
            "partition": origin_partition,
            "offset": origin_offset,
            "timestamp": _time(_int(h, H.ORIGIN_TIMESTAMP)),
        }
    payload = value or b""
    attempts = _int(h, H.ATTEMPT)
    return {
        "id": f"{partition}-{offset}",
        "partition": partition,
        "offset": offset,
        "dead_lettered_at": _time(timestamp_ms) or iso_time(0),
        "subscription": h.get(H.SUBSCRIPTION),
        "event_id": h.get(H.EVENT_ID),
        "reason": h.get(H.REASON, ""),
        "attempts": attempts if attempts is None or attempts >= 0 else None,
        "last_status": _int(h, H.STATUS),
        "last_error": h.get(H.LAST_ERROR),
        "first_attempt_at": _time(_int(h, H.FIRST_ATTEMPT)),
        "origin": origin,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "payload": payload[:preview].decode("utf-8", "replace"),
        "payload_truncated": len(payload) > preview,
        "payload_bytes": len(payload),
    }


class BadCursor(FanoutError):
    """A cursor that this API did not make."""


def encode_cursor(positions: dict[int, int]) -> str:
    raw = orjson.dumps({str(p): o for p, o in sorted(positions.items())})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[int, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        positions = {int(p): int(o) for p, o in data.items()}
    except (binascii.Error, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise BadCursor("the cursor is not one this API made") from None
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise BadCursor("the cursor is not one this API made")
    return positions


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def browse(
    settings: Settings,
    where: DeadLetterFilter,
    limit: int,
    cursor: dict[int, int] | None = None,
    preview: int = PAYLOAD_PREVIEW,
) -> Page:
    """One page of the dead letters ``where`` selects, from ``cursor`` (a decoded one) on. Blocking."""

    def matches(r: RangeRecord) -> bool:
        return where.matches(r.partition, r.offset, r.timestamp_ms, r.headers)

    page = read_page(settings, settings.topics.dlq, matches, limit, where.since_ms, where.until_ms, cursor)
    items = [
        view(r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers, preview) for r in page.records
    ]
    return Page(items, None if page.at_end else encode_cursor(page.positions))
