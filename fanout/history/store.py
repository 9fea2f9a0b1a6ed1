"""The history index: SQLite in WAL mode, one writer (the indexer's thread), readers on any thread.

Contract:

- ``ingest(values, positions)`` decodes a batch of attempts-topic values and writes, in one
  transaction, their rows, their rollups (``fanout.history.stats``) and ``positions`` (per (topic,
  partition) the next offset to read). A value that is not a record (``fanout.history.codec``) is
  skipped and counted; its offset still moves on. After a crash the index holds every batch up to the
  last committed one and ``positions()`` says where to resume: nothing is indexed twice or missed.
- ``prune()`` deletes rows older than the retention, at most ``budget`` rows per call (call it
  often; each call is one short transaction).
- Queries (``event``, ``attempts``, ``stats``, ``series``, ``overview``, ``latencies``) run on a
  connection of the calling thread, in one read transaction each, and never wait for the writer
  (WAL). They block: call them from an executor. One that runs longer than ``query_timeout`` is
  interrupted (``QueryTimeout``).
- One process writes a file: ``open()`` takes ``<path>.lock`` (``fanout.history.lock``) and raises
  ``IndexInUse`` when another process holds it; ``close()`` releases it. Reading needs no lock (a
  store that was never opened reads the file another process keeps).
- When SQLite reports the file corrupt, the operation raises ``IndexCorrupt`` and ``needs_rebuild`` is
  set; the indexer then calls ``rebuild()`` (the file is moved aside, the index starts empty and
  ``positions()`` is empty) and reads the topic from the beginning again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fanout.history import latency, queries, rollup
from fanout.history import schema as S
from fanout.history import stats as aggregates
from fanout.history.codec import MalformedRecord, checked
from fanout.history.lock import IndexLock
from fanout.history.queries import AttemptPage, AttemptQuery, EventHistory
from fanout.history.rows import CODE_OF, to_row
from fanout.history.stats import OverviewRow, Point, SubscriptionStats

log = logging.getLogger("fanout.history")

T = TypeVar("T")
PRUNE_BUDGET = 20_000
QUERY_TIMEOUT = 5.0
PROGRESS_STEPS = 20_000  # SQLite VM steps between deadline checks
Position = tuple[str, int]

_INSERT = (
    "INSERT INTO attempts (event_key, sub, time_ms, outcome, failed, attempt, status, latency_us, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OFFSETS = (
    "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
)


class QueryTimeout(Exception):
    """A query ran past ``query_timeout`` and was interrupted (the API answers 503)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a batch held; ``records``: the records written (as ``fanout.history.codec.checked`` gives
    them)."""

    indexed: int
    skipped: int
    records: Sequence[dict[str, Any]] = ()


class HistoryStore:
    """The index at ``path``, keeping ``retention_s`` seconds of records (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        retention_s: float,
        clock: Callable[[], float] = time.time,
        query_timeout: float = QUERY_TIMEOUT,
        role: str = "fanout",
    ) -> None:
        self.path = path
        self._file_lock = IndexLock(path, role)
        self.query_timeout = query_timeout
        self.retention_ms = int(retention_s * 1000)
        self._clock = clock
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._subs: dict[str, int] = {}
        self._prune_from = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.generation = 0
        self.needs_rebuild = False
        self.indexed = 0
        self.skipped = 0
        self.rebuilds = 0
        self.last_skip = ""

    # -- lifecycle (the indexer's thread) -------------------------------------------------------------

    def open(self) -> bool:
        """Open (or create) the index; True when it starts empty (missing, foreign or corrupt file).
        Raises ``IndexInUse`` when another process writes it."""
        with self._write_lock:
            self._file_lock.acquire()
            try:
                self._writer, fresh = S.open_index(self.path)
            except BaseException:
                self._file_lock.release()
                raise
            self._writer.create_function("merge_latency", 2, latency.merge, deterministic=True)
            self._subs.clear()
            self.generation += 1
            self.needs_rebuild = False
            return fresh

    def rebuild(self, reason: str) -> None:
        """Move the file aside and start an empty index (``positions()`` is then empty)."""
        log.warning("history index %s: %s; rebuilding it from the attempts topic", self.path, reason)
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            S.move_aside(self.path)
            self.rebuilds += 1
        self.open()

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._file_lock.release()
        with self._readers_lock:
            for con in self._readers:
                con.close()
            self._readers.clear()
        self.generation += 1

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            con = self._writer
            if con is None:
                raise RuntimeError("the history store is not open")
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    self._subs.clear()
                    raise
                con.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from exc

    def _corrupt(self, exc: sqlite3.DatabaseError) -> Exception:
        if S.is_corruption(exc):
            self.needs_rebuild = True
            return S.IndexCorrupt(str(exc))
        return exc

    # -- writing --------------------------------------------------------------------------------------

    def positions(self) -> dict[Position, int]:
        with self._transaction() as con:
            rows = con.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def _sub(self, con: sqlite3.Connection, name: str) -> int:
        found = self._subs.get(name)
        if found is None:
            con.execute("INSERT OR IGNORE INTO names (name) VALUES (?)", (name,))
            row = con.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()
            found = self._subs[name] = int(row[0])
        return found

    def ingest(self, values: Sequence[bytes | None], positions: Mapping[Position, int]) -> IngestResult:
        records = []
        for value in values:
            try:
                records.append(checked(value))
            except MalformedRecord as exc:
                self._skip(str(exc))
            except Exception as exc:  # a defect of the decoder: the topic's content must not stop the index
                log.exception("attempts topic: the decoder failed on a value; skipping it")
                self._skip(f"decoder error: {exc!r}"[:200])
        minutes: dict[tuple[int, int], rollup.Block] = {}
        with self._transaction() as con:
            rows = []
            for r in records:
                sub = self._sub(con, r["subscription"])
                code, time_ms, request = CODE_OF[r["outcome"]], r["time_ms"], r["request"]
                rows.append(to_row(r, sub, code))
                key = (time_ms // rollup.MINUTE_MS, sub)
                block = minutes.get(key)
                if block is None:
                    block = minutes[key] = rollup.Block()
                block.add(code, time_ms, None if request is None else request["latency_ms"])
            con.executemany(_INSERT, rows)
            con.executemany(rollup.UPSERT, rollup.rows(minutes))
            con.executemany(_OFFSETS, [(t, p, o) for (t, p), o in positions.items()])
        self.indexed += len(records)
        return IngestResult(len(records), len(values) - len(records), records)

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if not self.last_skip:
            log.warning("attempts topic: skipping a value that is not an attempt record (%s)", reason)
        self.last_skip = reason

    def prune(self, budget: int = PRUNE_BUDGET) -> int:
        """Delete up to ``budget`` attempts older than the retention (subscription by subscription,
        resuming where the last call stopped), and up to ``budget`` rollup blocks of each span that end
        before it."""
        cutoff = int(self._clock() * 1000) - self.retention_ms
        deleted = 0
        with self._transaction() as con:
            subs = [row[0] for row in con.execute("SELECT id FROM names ORDER BY id")]
            start = next((i for i, s in enumerate(subs) if s >= self._prune_from), 0)
            for sub in subs[start:] + subs[:start]:
                deleted += con.execute(
                    "DELETE FROM attempts WHERE id IN"
                    " (SELECT id FROM attempts WHERE sub = ? AND time_ms < ? LIMIT ?)",
                    (sub, cutoff, budget - deleted),
                ).rowcount
                if deleted >= budget:
                    self._prune_from = sub
                    break
            for span in rollup.SPANS:
                con.execute(
                    "DELETE FROM rollup WHERE (span, minute, sub) IN"
                    " (SELECT span, minute, sub FROM rollup WHERE span = ? AND minute <= ? LIMIT ?)",
                    (span, rollup.prune_before(cutoff // rollup.MINUTE_MS, span), budget),
                )
        return deleted

    # -- reading (any thread) -------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self.generation:
            return held[1]  # type: ignore[no-any-return]
        if held is not None:
            self._drop_reader(held[1])
        con = S.connect(self.path, query_only=True)
        with self._readers_lock:
            self._readers.append(con)
        self._local.held = (self.generation, con)
        return con

    def _drop_reader(self, con: sqlite3.Connection) -> None:
        with self._readers_lock:
            if con in self._readers:
                self._readers.remove(con)
        con.close()

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        con = self._reader()
        deadline = time.monotonic() + self.query_timeout
        con.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            con.execute("BEGIN")
            try:
                return query(con)
            finally:
                con.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline and "interrupt" in str(exc):
                raise QueryTimeout(f"the history query took longer than {self.query_timeout:g}s") from None
            raise self._corrupt(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    def knows(self, subscription: str) -> bool:
        """Whether the index has ever held a record of ``subscription`` (its name stays after pruning)."""
        return self._read(lambda con: queries.sub_id(con, subscription) is not None)

    def event(self, event_id: str) -> EventHistory | None:
        return self._read(lambda con: queries.event_history(con, event_id))

    def attempts(self, subscription: str, query: AttemptQuery) -> AttemptPage:
        return self._read(lambda con: queries.attempts(con, subscription, query))

    def _window(self, window_s: float) -> tuple[int, int]:
        now = int(self._clock() * 1000)
        return now - int(window_s * 1000), now + 1

    def stats(self, subscription: str, window_s: float) -> SubscriptionStats:
        since, until = self._window(window_s)
        return self._read(lambda con: aggregates.subscription_stats(con, subscription, since, until))

    def series(
        self, subscription: str, window_s: float, step_s: int, with_latency: bool = True
    ) -> list[Point]:
        """Totals per step; without ``with_latency`` their latency histograms stay empty (cheaper)."""
        since, until = self._window(window_s)
        return self._read(
            lambda con: aggregates.series(con, subscription, since, until, step_s, with_latency)
        )

    def overview(self, window_s: float = 3600, with_latency: bool = True) -> list[OverviewRow]:
        """Every active subscription's totals; without ``with_latency`` their latency histograms stay
        empty (about a fifth of the cost: ``latencies`` reads them for the subscriptions shown)."""
        since, until = self._window(window_s)
        return self._read(lambda con: aggregates.overview(con, since, until, with_latency))

    def latencies(self, subscriptions: Sequence[str], window_s: float) -> dict[str, latency.Histogram]:
        """The latency histograms of ``subscriptions`` over the window (those ``stats`` merges)."""
        since, until = self._window(window_s)
        return self._read(lambda con: aggregates.latencies(con, subscriptions, since, until))
