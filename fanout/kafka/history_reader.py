"""The history indexer: follows the attempts topic on its own thread and feeds ``HistoryStore``.

Every partition is assigned by hand (no consumer group, nothing committed to Kafka: each API replica
keeps its own index). Reading starts at the offsets stored in the index, in the transaction of the
rows before them, or at the beginning of partitions it has none for; so a restart resumes exactly
where the index stopped, and a new or rebuilt index reads the topic from its beginning. Partitions
added to the topic are picked up (checked every ``metadata_interval``) from their beginning.

Each ``consume`` batch becomes one ``ingest`` transaction. Between batches the store is pruned (a
bounded amount each time) and, when SQLite reports the file corrupt, rebuilt: the file is moved
aside and every partition is read again from the beginning. A batch that could not be written (disk
full, I/O error) is read again, from the offsets the index holds, ``WRITE_RETRY`` seconds later.

``status()`` is what ``/readyz`` and ``fanout_history_lag_seconds`` report: the records not yet
indexed (from the high watermarks the fetches bring back, no extra requests) and how old the last
indexed record is.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from fanout.config import Settings
from fanout.history.schema import IndexCorrupt
from fanout.history.status import HistoryStatus, lag_records, lag_seconds
from fanout.history.store import PRUNE_BUDGET, HistoryStore

log = logging.getLogger("fanout.kafka.history")

BATCH = 20_000
POLL_SECONDS = 0.2
METADATA_INTERVAL = 30.0
PRUNE_INTERVAL = 10.0
MISSING_TOPIC_RETRY = 5.0
METADATA_TIMEOUT = 5.0
WRITE_RETRY = 5.0
STOP_TIMEOUT = 15.0


class HistoryReader:
    """Indexes ``settings.topics.attempts`` into ``store``. ``start()`` opens the store (so queries
    work as soon as it returns) and starts the thread; ``stop()`` stops it and closes the store.

    ``first_offsets`` holds, per partition, the first offset read since the last (re)assignment: where
    reading resumed. ``error`` is set when the thread stopped on an error it cannot recover from."""

    def __init__(
        self,
        settings: Settings,
        store: HistoryStore,
        *,
        batch: int = BATCH,
        poll_seconds: float = POLL_SECONDS,
        metadata_interval: float = METADATA_INTERVAL,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        self._settings = settings
        self.topic = settings.topics.attempts
        self.store = store
        self._batch = batch
        self._poll = poll_seconds
        self._metadata_interval = metadata_interval
        self._prune_interval = prune_interval
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self.error: Exception | None = None
        self.first_offsets: dict[int, int] = {}
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._starts: dict[int, int] = {}
        self._last_record_ms: int | None = None
        self._started = time.time()
        self._thread = threading.Thread(target=self._run, name="fanout-history", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.open()
        self._started = time.time()
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.store.close()

    def status(self) -> HistoryStatus:
        records = lag_records(dict(self._ends), dict(self._positions), dict(self._starts))
        if not self._ends:
            records = None
        return HistoryStatus(
            lag_records=records,
            lag_seconds=lag_seconds(records, self._last_record_ms, self._started, time.time()),
            caught_up=self.caught_up.is_set(),
            indexed=self.store.indexed,
            skipped=self.store.skipped,
            rebuilds=self.store.rebuilds,
            error=None if self.error is None else str(self.error),
        )

    # -- the thread ---------------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self._settings.kafka.librdkafka(),
                "group.id": f"fanout-history-{uuid.uuid4().hex}",  # never joined: partitions are assigned
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
            log.exception("the history indexer failed")
            self.error = exc
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> set[int] | None:
        try:
            info = consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT).topics.get(self.topic)
        except KafkaException as exc:
            log.warning("history: no metadata for %s (%s); trying again", self.topic, exc.args[0])
            return None
        if info is None or info.error is not None or not info.partitions:
            log.warning("history: topic %s is missing; run `fanout topics create`", self.topic)
            return None
        return set(info.partitions)

    def _assign(self, consumer: Consumer, partitions: set[int], fresh: bool) -> None:
        """Assign ``partitions`` from the stored offsets (``fresh``: replacing the whole assignment)."""
        stored = {p: o for (t, p), o in self.store.positions().items() if t == self.topic}
        tps = [TopicPartition(self.topic, p, stored.get(p, OFFSET_BEGINNING)) for p in sorted(partitions)]
        if fresh:
            self._positions = {p: o for p, o in stored.items() if p in partitions}
            self._ends.clear()
            self._starts.clear()
            self.first_offsets.clear()
            consumer.assign(tps)
        else:
            consumer.incremental_assign(tps)
        log.info("history: reading %s partitions %s", self.topic, sorted(partitions))

    def _follow(self, consumer: Consumer) -> None:
        assigned: set[int] = set()
        next_metadata = next_prune = 0.0
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
            try:
                self._ingest(consumer.consume(self._batch, self._poll))
                if time.monotonic() >= next_prune:
                    full = self.store.prune() >= PRUNE_BUDGET
                    next_prune = time.monotonic() + (0 if full else self._prune_interval)
            except IndexCorrupt as exc:
                self._rebuild(consumer, assigned, str(exc))
                continue
            except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: the batch was not written
                log.error("history: could not write the index (%s); reading again in %gs", exc, WRITE_RETRY)
                self._stop.wait(WRITE_RETRY)
                self._assign(consumer, assigned, fresh=True)
                continue
            if self.store.needs_rebuild:
                self._rebuild(consumer, assigned, "a query found it corrupt")
                continue
            self._watermarks(consumer, assigned)

    def _ingest(self, messages: list[Message]) -> None:
        values: list[bytes | None] = []
        positions: dict[tuple[str, int], int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("history: %s", error.str())
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            self.first_offsets.setdefault(partition, offset)
            values.append(msg.value())
            positions[(self.topic, partition)] = offset + 1
            kind, timestamp = msg.timestamp()
            if kind != 0:
                self._last_record_ms = timestamp
        if positions:
            self.store.ingest(values, positions)
            for (_, partition), offset in positions.items():
                self._positions[partition] = offset

    def _watermarks(self, consumer: Consumer, assigned: set[int]) -> None:
        for partition in assigned:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
            if high >= 0:
                self._ends[partition] = high
            if low >= 0:
                self._starts[partition] = low
        if len(self._ends) == len(assigned) and lag_records(self._ends, self._positions, self._starts) == 0:
            self.caught_up.set()

    def _rebuild(self, consumer: Consumer, assigned: set[int], reason: str) -> None:
        self.caught_up.clear()
        self._last_record_ms = None
        self.store.rebuild(reason)
        self._assign(consumer, assigned, fresh=True)
