"""Replays (DESIGN.md, "Replays"): of dead letters, and of a time range of the source topics. Neither
re-enters a source topic: both write through one ``ReplayWriter`` to the first retry tier, addressed to
one subscription and to this process's ``dispatcher.group_id`` (whichever group wrote the original),
with the header contract of ``fanout.model.headers``: attempts from 0, first attempt and not-before
now (``max_age`` counts from the replay), the same event id (the webhook-id the subscriber saw, if it
saw it) and the event's origin. A call returns once the broker acknowledged every record it wrote, and
raises ``FanoutError`` otherwise. Blocking; each reports progress as it goes.

- **Dead letters** (``replay_dead_letters``): every dead letter matching a ``DeadLetterFilter``, with
  its own headers (``headers.replay_of_dead_letter``). Poison records (no subscription) and dead
  letters written without their value (``record too large``) are skipped and counted.
- **A source range** (``replay_source``): for each of the subscription's topics, every record with
  ``since <= timestamp < until`` is decoded and routed with a table holding only this subscription,
  and each match is written (``headers.for_replay``). Undecodable records are skipped: they were
  dead-lettered when first read.

The Kafka side is ``fanout.kafka``'s: ranges read by timestamp (``ranges.RangeReader``) and an
acknowledged bulk writer (``producer.AckedWriter``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fanout.config import Settings
from fanout.control.deadletters import DeadLetterFilter
from fanout.kafka.producer import AckedWriter
from fanout.kafka.ranges import RangeReader, RangeRecord
from fanout.model import headers as H
from fanout.model.errors import FanoutError, PoisonRecord
from fanout.model.event import Event, Headers
from fanout.model.subscription import Subscription
from fanout.pipeline.decode import decode
from fanout.pipeline.route import RoutingTable

PROGRESS_EVERY = 0.5


def _now_ms() -> int:
    return int(time.time() * 1000)


class RecordWriter(Protocol):
    """What the replay writer writes through (``fanout.kafka.producer.AckedWriter``)."""

    @property
    def acked(self) -> int: ...

    def write(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None: ...

    def serve(self) -> None: ...

    def finish(self) -> None: ...


class ReplayWriter:
    """The one writer of replayed deliveries (see the module's docstring); ``out`` defaults to a Kafka
    ``AckedWriter``."""

    def __init__(self, settings: Settings, out: RecordWriter | None = None) -> None:
        self.topic = settings.topics.retry(0)
        self.group = settings.dispatcher.group_id
        self._out = out if out is not None else AckedWriter(settings)

    @property
    def acked(self) -> int:
        return self._out.acked

    def dead_letter(self, record: RangeRecord) -> bool:
        """Write the replay of a dead letter; False (nothing written) when it cannot be replayed."""
        headers = H.replay_of_dead_letter(record.headers, self.group, _now_ms())
        if headers is None:
            return False
        self._out.write(self.topic, record.value, record.key, headers)
        return True

    def source(self, record: RangeRecord, subscription: str, event: Event) -> None:
        """Write the replay of source ``record`` (decoded as ``event``) to ``subscription``."""
        origin = (record.topic, record.partition, record.offset, int(event.time * 1000))
        headers = H.for_replay(record.headers, subscription, self.group, event.id, origin, _now_ms())
        self._out.write(self.topic, record.value, record.key, headers)

    def serve(self) -> None:
        self._out.serve()

    def finish(self) -> None:
        try:
            self._out.finish()
        except FanoutError as exc:
            raise FanoutError(f"replay: {exc}") from None


@dataclass
class ReplayCounts:
    replayed: int = 0
    skipped: int = 0
    scanned: int = 0
    total: int = 0


def replay_dead_letters(
    settings: Settings,
    where: DeadLetterFilter,
    limit: int | None = None,
    progress: Callable[[ReplayCounts], None] | None = None,
) -> ReplayCounts:
    """Re-enqueue the matching dead letters (at most ``limit``)."""
    topic = settings.topics.dlq
    counts = ReplayCounts()
    writer = ReplayWriter(settings)
    last = time.monotonic()
    with RangeReader(settings) as reader:
        parts = reader.partitions(topic)
        if where.partitions is not None:
            parts = [p for p in parts if p in where.partitions]
        ends = reader.offsets_at(topic, parts, where.until_ms, beginning=False)
        starts = reader.offsets_at(topic, parts, where.since_ms, beginning=True)
        counts.total = sum(max(0, ends[p] - starts[p]) for p in parts)
        for record in reader.read(topic, starts, ends):
            counts.scanned += 1
            if where.matches(record.partition, record.offset, record.timestamp_ms, record.headers):
                if writer.dead_letter(record):
                    counts.replayed += 1
                else:
                    counts.skipped += 1
            writer.serve()
            if progress is not None and time.monotonic() - last >= PROGRESS_EVERY:
                progress(counts)
                last = time.monotonic()
            if limit is not None and counts.replayed >= limit:
                break
    writer.finish()
    if progress is not None:
        progress(counts)
    return counts


@dataclass
class ReplayProgress:
    total: int = 0
    scanned: int = 0
    matched: int = 0
    written: int = 0


def _routed(record: RangeRecord, table: RoutingTable) -> Event | None:
    """The event of a source record when it matches the table's subscription."""
    try:
        event = decode(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.headers,
            record.timestamp_ms / 1000,
        )
    except PoisonRecord:
        return None
    return event if table.route(event) else None


def replay_source(
    settings: Settings,
    sub: Subscription,
    since_ms: int,
    until_ms: int,
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplayProgress:
    """Replay ``since_ms <= timestamp < until_ms`` of ``sub``'s topics to ``sub`` (``FanoutError``
    "replay stopped" when ``stop`` is set before the end)."""
    table = RoutingTable.build([sub])
    state = ReplayProgress()
    writer = ReplayWriter(settings)
    last = time.monotonic()
    with RangeReader(settings) as reader:
        ranges = []
        for topic in sub.topics:
            parts = reader.partitions(topic)
            starts = reader.offsets_at(topic, parts, since_ms, beginning=True)
            ends = reader.offsets_at(topic, parts, until_ms, beginning=False)
            state.total += sum(max(0, ends[p] - starts[p]) for p in parts)
            ranges.append((topic, starts, ends))
        for topic, starts, ends in ranges:
            for record in reader.read(topic, starts, ends):
                state.scanned += 1
                if since_ms <= record.timestamp_ms < until_ms:
                    event = _routed(record, table)
                    if event is not None:
                        state.matched += 1
                        writer.source(record, sub.id, event)
                writer.serve()
                state.written = writer.acked
                if progress is not None and time.monotonic() - last >= PROGRESS_EVERY:
                    progress(state)
                    last = time.monotonic()
                if stop is not None and stop.is_set():
                    raise FanoutError("replay stopped")
    writer.finish()
    state.written = writer.acked
    if progress is not None:
        progress(state)
    return state
