"""The dead-letter topic: browse it a page at a time, and replay what matches a filter.

**Browse.** Every partition is read from its start position (the cursor, or the first record at or
after ``since``) up to its end when the browse began (or the first record at ``until``); a partition
stops once it has ``limit`` matches, and the whole read stops after ``SCAN_BUDGET`` records. The
matches are merged oldest first and cut at ``limit``. The next cursor holds, per partition, the first
match not shown or where the read stopped, so paging never skips or repeats a record.

**Replay** (DESIGN.md, "Replays"): each matching dead letter is written to the first retry tier,
addressed to its subscription and to this process's ``dispatcher.group_id`` (whichever group
dead-lettered it), with ``fanout-attempt: 0``, first attempt and not-before now, and the same event id
and origin (``headers.replay_of_dead_letter``). Poison records (no subscription) and dead letters
written without their value (``record too large``) are skipped (counted). The call returns once the
broker acknowledged every record.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from confluent_kafka import KafkaError, Message, Producer

from fanout.config import Settings
from fanout.control.deadletters import DeadLetterFilter, view
from fanout.kafka.producer import produce_waiting, producer_config
from fanout.kafka.ranges import RangeReader
from fanout.model import headers as H
from fanout.model.errors import FanoutError
from fanout.model.event import Headers

SCAN_BUDGET = 100_000
PROGRESS_EVERY = 0.5


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


def _headers(msg: Message) -> Headers:
    return cast(Headers, msg.headers() or [])


def browse(
    settings: Settings,
    where: DeadLetterFilter,
    limit: int,
    cursor: dict[int, int] | None = None,
    preview: int = 4096,
) -> Page:
    topic = settings.topics.dlq
    with RangeReader(settings) as reader:
        parts = reader.partitions(topic)
        ends = reader.offsets_at(topic, parts, where.until_ms, beginning=False)
        starts = reader.offsets_at(topic, parts, where.since_ms, beginning=True)
        if cursor is not None:
            starts = {p: max(starts[p], cursor.get(p, starts[p])) for p in parts}
        found: dict[int, list[tuple[int, int, Message]]] = {p: [] for p in parts}
        position = dict(starts)
        for scanned, msg in enumerate(reader.read(topic, starts, ends), start=1):
            partition, offset = msg.partition() or 0, msg.offset() or 0
            timestamp = msg.timestamp()[1]
            position[partition] = offset + 1
            if where.matches(partition, offset, timestamp, _headers(msg)):
                found[partition].append((timestamp, offset, msg))
                if len(found[partition]) >= limit:
                    reader.pause(partition)
            if scanned >= SCAN_BUDGET:
                break
    merged = sorted(
        ((ts, p, off, msg) for p, matches in found.items() for ts, off, msg in matches),
        key=lambda item: item[:3],
    )
    shown = merged[:limit]
    items = [view(p, off, ts, msg.key(), msg.value(), _headers(msg), preview) for ts, p, off, msg in shown]
    nxt = {}
    for p in parts:
        untaken = [off for ts, q, off, _ in merged[limit:] if q == p]
        nxt[p] = min(untaken) if untaken else position[p]
    at_end = all(nxt[p] >= ends[p] for p in parts)
    return Page(items, None if at_end else encode_cursor(nxt))


@dataclass
class ReplayCounts:
    replayed: int = 0
    skipped: int = 0
    scanned: int = 0
    total: int = 0


def replay(
    settings: Settings,
    where: DeadLetterFilter,
    limit: int | None = None,
    progress: Callable[[ReplayCounts], None] | None = None,
) -> ReplayCounts:
    """Re-enqueue the matching dead letters; blocking."""
    topic = settings.topics.dlq
    retry_topic = settings.topics.retry(0)
    group = settings.dispatcher.group_id
    counts = ReplayCounts()
    failures: list[str] = []

    def acked(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            failures.append(error.str())

    producer = Producer(producer_config(settings))
    last = time.monotonic()
    with RangeReader(settings) as reader:
        parts = reader.partitions(topic)
        if where.partitions is not None:
            parts = [p for p in parts if p in where.partitions]
        ends = reader.offsets_at(topic, parts, where.until_ms, beginning=False)
        starts = reader.offsets_at(topic, parts, where.since_ms, beginning=True)
        counts.total = sum(max(0, ends[p] - starts[p]) for p in parts)
        for msg in reader.read(topic, starts, ends):
            counts.scanned += 1
            headers = _headers(msg)
            if where.matches(msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1], headers):
                replayed = H.replay_of_dead_letter(headers, group, int(time.time() * 1000))
                if replayed is None:
                    counts.skipped += 1
                else:
                    produce_waiting(
                        producer,
                        retry_topic,
                        value=msg.value(),
                        key=msg.key(),
                        headers=cast(Any, replayed),
                        on_delivery=acked,
                    )
                    producer.poll(0)
                    counts.replayed += 1
            if progress is not None and time.monotonic() - last >= PROGRESS_EVERY:
                progress(counts)
                last = time.monotonic()
            if limit is not None and counts.replayed >= limit:
                break
    if producer.flush(60) or failures:
        raise FanoutError(f"replay: the broker did not acknowledge every record: {failures[:1]}")
    if progress is not None:
        progress(counts)
    return counts
