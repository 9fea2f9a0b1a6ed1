"""Following every partition of a topic without a consumer group, and handing what it reads, a batch at
a time, to a ``BatchSink`` (the history indexer, ``fanout.history.indexer``, is one).

Every partition is assigned by hand (no consumer group, nothing committed to Kafka). Reading starts at
the offsets the sink's ``starts()`` gives (where the sink's own store says it stopped), or at the
beginning of partitions it gives none for. Partitions added to the topic are picked up (checked every
``metadata_interval``); a topic that does not exist yet is waited for.

Each ``consume`` round becomes one ``take(batch)``, an empty one too (the sink may do its housekeeping
between batches). ``take`` may raise ``ReadAgain``: the batch was not kept; the tail forgets what it
read, calls the exception's ``reset`` if it has one (the sink starts over: its ``starts()`` changes, and
``caught_up`` is cleared), waits ``delay`` seconds and assigns every partition again from ``starts()``.
Any other exception from ``take``, and a fatal Kafka error, stop the tail with ``error`` set.

``progress()`` is what the sink needs to report its lag: the low and high watermarks the fetches
brought back (no extra requests), the positions after the last batch taken, the timestamp of the last
record read, and whether every partition was read to its end at least once (``caught_up``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from fanout.config import Settings

log = logging.getLogger("fanout.kafka.tail")

BATCH = 20_000
POLL_SECONDS = 0.2
METADATA_INTERVAL = 30.0
MISSING_TOPIC_RETRY = 5.0
METADATA_TIMEOUT = 5.0
STOP_TIMEOUT = 15.0


@dataclass(slots=True)
class TailBatch:
    """The values read in one round, in order, and per partition the offset after the last of them."""

    values: list[bytes | None] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TailProgress:
    ends: dict[int, int]
    positions: dict[int, int]
    starts: dict[int, int]
    last_record_ms: int | None
    caught_up: bool


class ReadAgain(Exception):
    """Raised by ``BatchSink.take``: read again from ``starts()`` after ``delay`` seconds, calling
    ``reset`` first when the sink starts over from nothing."""

    def __init__(self, delay: float = 0.0, reset: Callable[[], None] | None = None) -> None:
        super().__init__(delay)
        self.delay = delay
        self.reset = reset


class BatchSink(Protocol):
    def starts(self) -> Mapping[int, int]:
        """Per partition, the offset to read from (partitions absent: from the beginning)."""
        ...

    def take(self, batch: TailBatch) -> None:
        """Keep ``batch`` (called on the tail's thread); may raise ``ReadAgain``."""
        ...


class TopicTail:
    """Follows ``topic`` on its own thread into ``sink``. ``first_offsets`` holds, per partition, the
    first offset read since the last (re)assignment: where reading resumed. ``error`` is set when the
    thread stopped on an error it cannot recover from."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        sink: BatchSink,
        name: str,
        *,
        batch: int = BATCH,
        poll_seconds: float = POLL_SECONDS,
        metadata_interval: float = METADATA_INTERVAL,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._sink = sink
        self._name = name
        self._batch = batch
        self._poll = poll_seconds
        self._metadata_interval = metadata_interval
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self.error: Exception | None = None
        self.first_offsets: dict[int, int] = {}
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._starts: dict[int, int] = {}
        self._last_record_ms: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"fanout-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def progress(self) -> TailProgress:
        return TailProgress(
            dict(self._ends),
            dict(self._positions),
            dict(self._starts),
            self._last_record_ms,
            self.caught_up.is_set(),
        )

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self._settings.kafka.librdkafka(),
                "group.id": f"fanout-{self._name}-{uuid.uuid4().hex}",  # never joined: assigned by hand
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except KafkaException as exc:
            self.error = exc
            return
        try:
            self._follow(consumer)
        except Exception as exc:
            log.exception("%s: following %s failed", self._name, self.topic)
            self.error = exc
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> set[int] | None:
        try:
            info = consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT).topics.get(self.topic)
        except KafkaException as exc:
            log.warning("%s: no metadata for %s (%s); trying again", self._name, self.topic, exc.args[0])
            return None
        if info is None or info.error is not None or not info.partitions:
            log.warning("%s: topic %s is missing; run `fanout topics create`", self._name, self.topic)
            return None
        return set(info.partitions)

    def _assign(self, consumer: Consumer, partitions: set[int], fresh: bool) -> None:
        """Assign ``partitions`` from the sink's offsets (``fresh``: replacing the whole assignment)."""
        stored = dict(self._sink.starts())
        tps = [TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING)) for p in sorted(partitions)]
        if fresh:
            self._positions = {p: o for p, o in stored.items() if p in partitions}
            self._ends.clear()
            self._starts.clear()
            self.first_offsets.clear()
            consumer.assign(tps)
        else:
            consumer.incremental_assign(tps)
        log.info("%s: reading %s partitions %s", self._name, self.topic, sorted(partitions))

    def _follow(self, consumer: Consumer) -> None:
        assigned: set[int] = set()
        next_metadata = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_metadata:
                partitions = self._partitions(consumer)
                next_metadata = now + (self._metadata_interval if partitions else MISSING_TOPIC_RETRY)
                if partitions and partitions - assigned:
                    self._assign(consumer, partitions - assigned, fresh=not assigned)
                    assigned |= partitions
            if not assigned:
                self._stop.wait(min(self._poll, max(0.0, next_metadata - now)))
                continue
            batch = self._batch_of(consumer.consume(self._batch, self._poll))
            try:
                self._sink.take(batch)
            except ReadAgain as again:
                if again.reset is not None:
                    self.caught_up.clear()
                    self._last_record_ms = None
                    again.reset()
                if again.delay > 0:
                    self._stop.wait(again.delay)
                self._assign(consumer, assigned, fresh=True)
                continue
            self._positions.update(batch.positions)
            self._watermarks(consumer, assigned)

    def _batch_of(self, messages: list[Message]) -> TailBatch:
        batch = TailBatch()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: %s", self._name, error.str())
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            self.first_offsets.setdefault(partition, offset)
            batch.values.append(msg.value())
            batch.positions[partition] = offset + 1
            kind, timestamp = msg.timestamp()
            if kind != 0:
                self._last_record_ms = timestamp
        return batch

    def _watermarks(self, consumer: Consumer, assigned: set[int]) -> None:
        for partition in assigned:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            if high >= 0:
                self._ends[partition] = high
            if low >= 0:
                self._starts[partition] = low
        if len(self._ends) == len(assigned) and self._at_end():
            self.caught_up.set()

    def _at_end(self) -> bool:
        """Every partition read to its end: its next offset (its start when nothing was read from it
        yet, or when retention deleted the records before that offset) is at least its end."""
        for partition, end in self._ends.items():
            start = self._starts.get(partition)
            position = self._positions.get(partition, start)
            if position is None or position < 0 or end > max(position, start or 0):
                return False
        return True
