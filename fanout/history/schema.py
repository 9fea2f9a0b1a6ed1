"""The index file: its tables, and opening it (or starting over when it is missing, foreign or corrupt).

Tables:

- ``attempts``: one row per attempt record (``fanout.history.rows``). Indexes: the event (a 64-bit hash
  of its id), (subscription, time), (subscription, outcome, time), and failures alone (a partial index
  on (subscription, time)), so that every query of ``fanout.history.queries`` is a range scan.
- ``rollup``: per subscription and block of ``span`` minutes (1 and 10: ``rollup.SPANS``), the counts by
  outcome, HTTP attempts, failures, a latency histogram and the last success and failure; maintained
  at ingest, in the same transaction. A window reads 10-minute blocks where they fit inside it and
  1-minute blocks at its edges. Keyed by (span, minute, subscription) for the overview's range, with an
  index on (subscription, span, minute) for one subscription's stats and series.
- ``names``: subscription ids as small integers.
- ``offsets``: per (topic, partition), the next offset to read; written in the transaction that
  inserts the rows read before it, so a restart resumes exactly where the index stopped.

The file is a cache of the attempts topic, never a source of truth: a file of another format
(``application_id``), another layout version (``user_version``) or that SQLite finds corrupt is moved
aside (one previous copy kept, as ``<name>.bad``) and the index starts over from the topic.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("fanout.history")

APPLICATION_ID = 0x66616E6F  # "fano"
STORE_VERSION = 1
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

DDL = """
CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    event_key INTEGER NOT NULL,
    sub INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    outcome INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,
    latency_us INTEGER,
    detail BLOB NOT NULL
);
CREATE INDEX attempts_event ON attempts (event_key);
CREATE INDEX attempts_sub_time ON attempts (sub, time_ms);
CREATE INDEX attempts_sub_outcome ON attempts (sub, outcome, time_ms);
CREATE INDEX attempts_sub_failed ON attempts (sub, time_ms) WHERE failed;
CREATE TABLE rollup (
    span INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    sub INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    retry_scheduled INTEGER NOT NULL,
    spilled INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    attempted INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    latency BLOB,
    last_success_ms INTEGER,
    last_failure_ms INTEGER,
    PRIMARY KEY (span, minute, sub)
) WITHOUT ROWID;
CREATE INDEX rollup_sub ON rollup (sub, span, minute);
CREATE TABLE offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA cache_size=-65536",
    "PRAGMA temp_store=MEMORY",
)


class IndexCorrupt(Exception):
    """SQLite found the index file corrupt (or not a database): rebuild it."""


def is_corruption(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and (code & 0xFF) in CORRUPT_CODES


def connect(path: Path, query_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); ``query_only``: a reader's, which
    never creates the file."""
    target: str | Path = path.resolve().as_uri() + "?mode=rw" if query_only else path
    con = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=query_only)
    for pragma in PRAGMAS:
        con.execute(pragma)
    if query_only:
        con.execute("PRAGMA query_only=1")
    return con


def _fits(con: sqlite3.Connection) -> bool:
    app = con.execute("PRAGMA application_id").fetchone()[0]
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if app == APPLICATION_ID and version == STORE_VERSION:
        return True
    if app == 0 and version == 0 and not con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        stamp = f"PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={STORE_VERSION};"
        con.executescript(f"BEGIN; {DDL} {stamp} COMMIT;")
        return True
    return False


def move_aside(path: Path) -> None:
    """Move the index file (and its WAL and shared-memory files) to ``<name>.bad``, replacing the one
    kept from before; the next ``open_index`` starts an empty index."""
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            source.replace(path.with_name(path.name + ".bad" + suffix))


def open_index(path: Path) -> tuple[sqlite3.Connection, bool]:
    """The writer's connection to the index at ``path``, created when missing; and whether it started
    empty because the file was missing, foreign, of another version or corrupt (moved aside then)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    for _ in range(2):
        con = None
        try:
            con = connect(path)
            if _fits(con):
                con.execute("SELECT count(*) FROM offsets").fetchone()
                return con, not existed
            problem = "it is not a fanout history index of this version"
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            problem = f"SQLite finds it corrupt ({exc})"
        if con is not None:
            con.close()
        log.warning("history index %s: %s; moving it aside and rebuilding from the topic", path, problem)
        move_aside(path)
        existed = False
    raise IndexCorrupt(f"cannot create a history index at {path}")
