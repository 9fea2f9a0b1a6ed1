"""The history indexer: follows the attempts topic (``fanout.kafka.tail.TopicTail``) and feeds
``HistoryStore``.

Nothing is committed to Kafka: each API replica keeps its own index. Reading starts at the offsets
stored in the index, in the transaction of the rows before them, or at the beginning of partitions it
has none for; so a restart resumes exactly where the index stopped, and a new or rebuilt index reads
the topic from its beginning. Partitions added to the topic are picked up from their beginning.

Each batch the tail reads becomes one ``ingest`` transaction. Between batches the store is pruned (a
bounded amount each time) and, when SQLite reports the file corrupt, rebuilt: the file is moved aside
and every partition is read again from the beginning. A batch that could not be written (disk full,
I/O error) is read again, from the offsets the index holds, ``WRITE_RETRY`` seconds later.

With ``logs`` (``history.otlp_logs``), each record written to the index is also emitted as an
OpenTelemetry log record (``fanout.history.otlp_logs``), once per index: an index that resumes emits
the records it had not read; a new or rebuilt one (an ``emptyDir`` after a restart) emits only those
decided after it started, not the whole topic again. Each replica emits what it indexes: turn it on
for one replica, or drop duplicates in the collector (the body and attributes are the same).

``status()`` is what ``/readyz`` and ``fanout_history_lag_seconds`` report: the records not yet
indexed (from the high watermarks the fetches bring back, no extra requests) and how old the last
indexed record is.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Mapping

from fanout.config import Settings
from fanout.history.otlp_logs import AttemptLogs
from fanout.history.schema import IndexCorrupt
from fanout.history.status import HistoryStatus, lag_records, lag_seconds
from fanout.history.store import PRUNE_BUDGET, HistoryStore
from fanout.kafka.tail import (
    BATCH,
    METADATA_INTERVAL,
    POLL_SECONDS,
    STOP_TIMEOUT,
    ReadAgain,
    TailBatch,
    TopicTail,
)

log = logging.getLogger("fanout.history.indexer")

PRUNE_INTERVAL = 10.0
WRITE_RETRY = 5.0


class HistoryIndexer:
    """Indexes ``settings.topics.attempts`` into ``store``. ``start()`` opens the store (so queries
    work as soon as it returns) and starts reading; ``stop()`` stops it and closes the store.

    ``first_offsets`` holds, per partition, the first offset read since the last (re)assignment: where
    reading resumed. ``error`` is set when reading stopped on an error it cannot recover from."""

    def __init__(
        self,
        settings: Settings,
        store: HistoryStore,
        *,
        batch: int = BATCH,
        poll_seconds: float = POLL_SECONDS,
        metadata_interval: float = METADATA_INTERVAL,
        prune_interval: float = PRUNE_INTERVAL,
        logs: AttemptLogs | None = None,
    ) -> None:
        self.topic = settings.topics.attempts
        self.logs = logs
        self._emit_from_ms: int | None = None
        self.store = store
        self._prune_interval = prune_interval
        self._next_prune = 0.0
        self._started = time.time()
        self.tail = TopicTail(
            settings,
            self.topic,
            self,
            "history",
            batch=batch,
            poll_seconds=poll_seconds,
            metadata_interval=metadata_interval,
        )

    @property
    def caught_up(self) -> threading.Event:
        return self.tail.caught_up

    @property
    def first_offsets(self) -> dict[int, int]:
        return self.tail.first_offsets

    @property
    def error(self) -> Exception | None:
        return self.tail.error

    def start(self) -> None:
        """Open the store (``IndexInUse`` when another process writes it) and start reading. An index
        made from another topic (another ``topics.prefix``) is rebuilt: its rows are not this topic's."""
        self._started = time.time()
        if self.store.open():
            self._emit_from_ms = int(self._started * 1000)
        foreign = sorted({topic for topic, _ in self.store.positions()} - {self.topic})
        if foreign:
            self._rebuild_now(f"it holds {foreign[0]}, not {self.topic}")
        self.tail.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.tail.stop(timeout)
        self.store.close()
        if self.logs is not None:
            self.logs.shutdown()

    def status(self) -> HistoryStatus:
        progress = self.tail.progress()
        records = lag_records(progress.ends, progress.positions, progress.starts) if progress.ends else None
        return HistoryStatus(
            lag_records=records,
            lag_seconds=lag_seconds(records, progress.last_record_ms, self._started, time.time()),
            caught_up=progress.caught_up,
            indexed=self.store.indexed,
            skipped=self.store.skipped,
            rebuilds=self.store.rebuilds,
            error=None if self.error is None else str(self.error),
        )

    # -- the tail's BatchSink (called on its thread) ---------------------------------------------------

    def starts(self) -> Mapping[int, int]:
        return {p: o for (t, p), o in self.store.positions().items() if t == self.topic}

    def take(self, batch: TailBatch) -> None:
        try:
            if batch.positions:
                done = self.store.ingest(
                    batch.values, {(self.topic, p): o for p, o in batch.positions.items()}
                )
                if self.logs is not None and done.records:
                    since = self._emit_from_ms
                    self.logs.emit(r for r in done.records if since is None or r["time_ms"] >= since)
            if time.monotonic() >= self._next_prune:
                full = self.store.prune() >= PRUNE_BUDGET
                self._next_prune = time.monotonic() + (0 if full else self._prune_interval)
        except IndexCorrupt as exc:
            raise self._rebuild(str(exc)) from None
        except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: the batch was not written
            log.error("history: could not write the index (%s); reading again in %gs", exc, WRITE_RETRY)
            raise ReadAgain(WRITE_RETRY) from None
        if self.store.needs_rebuild:
            raise self._rebuild("a query found it corrupt")

    def _rebuild(self, reason: str) -> ReadAgain:
        return ReadAgain(reset=lambda: self._rebuild_now(reason))

    def _rebuild_now(self, reason: str) -> None:
        self.store.rebuild(reason)
        self._emit_from_ms = int(time.time() * 1000)
