"""Reading the index: an event's history, and a subscription's attempts page by page.

Both are range scans of an index (``fanout.history.schema``); neither reads more rows than it returns,
plus the event's hash collisions and the rows a ``status`` filter passes over.

Paging is keyset paging on (time, row id), newest first. The cursor is the position after the last
row returned, so a page never repeats or skips a row that existed when the previous page was read,
whatever was inserted or pruned in between (rows inserted later with an older time show up in later
pages; rows pruned meanwhile are simply gone).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass
from typing import Literal

import orjson

from fanout.history.record import AttemptRecord, Body, Origin, Outcome
from fanout.history.rows import OUTCOME_CODE, event_key, from_row

MAX_LIMIT = 1000
MAX_EVENT_ROWS = 10_000  # records read for one event: far above any real schedule, bounds a hostile one

State = Literal["delivered", "retry_pending", "dead_lettered", "dropped", "disabled"]
_STATE: dict[Outcome, State] = {
    Outcome.DELIVERED: "delivered",
    Outcome.RETRY_SCHEDULED: "retry_pending",
    Outcome.SPILLED: "retry_pending",
    Outcome.DEAD_LETTERED: "dead_lettered",
    Outcome.DROPPED: "dropped",
    Outcome.DISABLED: "disabled",
}


class InvalidCursor(ValueError):
    """The cursor was not made by ``attempts`` (the API answers 400)."""


@dataclass(frozen=True, slots=True)
class SubscriptionHistory:
    """One subscription's records for an event, in order, and where the delivery stands: its last
    record's outcome (``retry_pending`` until ``until_ms`` for a retry or a spill)."""

    subscription: str
    state: State
    until_ms: int | None
    attempts: tuple[AttemptRecord, ...]


@dataclass(frozen=True, slots=True)
class EventHistory:
    event_id: str
    event_type: str
    event_time_ms: int | None
    origin: Origin | None
    payload: Body | None
    subscriptions: tuple[SubscriptionHistory, ...]


def sub_id(con: sqlite3.Connection, name: str) -> int | None:
    row = con.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def event_history(con: sqlite3.Connection, event_id: str) -> EventHistory | None:
    """Every record of ``event_id`` by subscription (ordered by time, then arrival); None if none."""
    rows = con.execute(
        "SELECT n.name, a.time_ms, a.outcome, a.attempt, a.status, a.latency_us, a.detail"
        " FROM attempts a JOIN names n ON n.id = a.sub WHERE a.event_key = ?"
        " ORDER BY a.time_ms, a.id LIMIT ?",
        (event_key(event_id), MAX_EVENT_ROWS),
    ).fetchall()
    by_sub: dict[str, list[AttemptRecord]] = {}
    for row in rows:
        record = from_row(*row)
        if record.event_id == event_id:
            by_sub.setdefault(record.subscription, []).append(record)
    if not by_sub:
        return None
    records = [r for group in by_sub.values() for r in group]
    first = min(records, key=lambda r: r.time_ms)
    subs = []
    for name in sorted(by_sub):
        group = by_sub[name]
        last = group[-1]
        until = last.retry.not_before_ms if last.retry is not None else None
        subs.append(SubscriptionHistory(name, _STATE[last.outcome], until, tuple(group)))
    return EventHistory(
        event_id=event_id,
        event_type=next((r.event_type for r in records if r.event_type), ""),
        event_time_ms=next((r.event_time_ms for r in records if r.event_time_ms is not None), None),
        origin=next((r.origin for r in records if r.origin is not None), first.origin),
        payload=next((r.payload for r in records if r.payload is not None), None),
        subscriptions=tuple(subs),
    )


@dataclass(frozen=True, slots=True)
class AttemptQuery:
    """Filters of a subscription's attempts: ``outcome`` (an outcome, or ``failed`` for every failure),
    HTTP ``status``, ``since_ms`` (inclusive) and ``until_ms`` (exclusive), at most ``limit`` rows
    (1..``MAX_LIMIT``) after ``cursor``."""

    outcome: Outcome | Literal["failed"] | None = None
    status: int | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 50
    cursor: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}")


@dataclass(frozen=True, slots=True)
class AttemptPage:
    attempts: tuple[AttemptRecord, ...]
    next_cursor: str | None


def encode_cursor(time_ms: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([1, time_ms, row_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    if len(cursor) > 100:
        raise InvalidCursor("cursor too long")
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor this API returned") from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != 1
        or not all(type(v) is int and 0 <= v < 2**63 for v in value[1:])
    ):
        raise InvalidCursor("not a cursor this API returned")
    return value[1], value[2]


def attempts(con: sqlite3.Connection, subscription: str, query: AttemptQuery) -> AttemptPage:
    """A page of ``subscription``'s records, newest first (raises ``InvalidCursor``)."""
    position = decode_cursor(query.cursor) if query.cursor else None
    sub = sub_id(con, subscription)
    if sub is None:
        return AttemptPage((), None)
    where = ["a.sub = ?"]
    args: list[object] = [sub]
    if query.outcome == "failed":
        where.append("a.failed")
    elif query.outcome is not None:
        where.append("a.outcome = ?")
        args.append(OUTCOME_CODE[Outcome(query.outcome)])
    if query.status is not None:
        where.append("a.status = ?")
        args.append(query.status)
    if query.since_ms is not None:
        where.append("a.time_ms >= ?")
        args.append(query.since_ms)
    if query.until_ms is not None:
        where.append("a.time_ms < ?")
        args.append(query.until_ms)
    if position is not None:
        where.append("a.time_ms <= ? AND (a.time_ms < ? OR a.id < ?)")
        args += [position[0], position[0], position[1]]
    rows = con.execute(
        "SELECT a.id, a.time_ms, a.outcome, a.attempt, a.status, a.latency_us, a.detail FROM attempts a"
        f" WHERE {' AND '.join(where)} ORDER BY a.time_ms DESC, a.id DESC LIMIT ?",
        [*args, query.limit + 1],
    ).fetchall()
    page = rows[: query.limit]
    records = tuple(from_row(subscription, *row[1:]) for row in page)
    more = len(rows) > query.limit
    return AttemptPage(records, encode_cursor(page[-1][1], page[-1][0]) if more else None)
