"""Dead letters as people read them: a filter, and the view of one record
(``schemas/dead-letter.schema.json``).

The view takes everything from the record's ``fanout-*`` headers (see ``fanout.model.headers``): reason,
attempts, last status and error, origin, first attempt; and shows the payload as text, truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fanout.model import headers as H
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
