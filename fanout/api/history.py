"""The delivery history (scope ``deliveries:read``): ``GET /v1/events/{id}``,
``GET /v1/subscriptions/{id}/attempts`` and ``GET /v1/subscriptions/{id}/stats``.

Answered from this replica's index of the attempts topic (``fanout.history``), which ``History``
keeps: the indexer on its own thread, queries on a small pool of their own (each thread holds one
read connection; a slow query never takes the threads other routes use; at most ``MAX_PENDING``
queries run or wait, more are answered 503). Until the index has read the topic to its end once
(after a start or a rebuild), these routes answer 503 with ``Retry-After``
rather than an incomplete history ("no such event" for one that is merely not indexed yet); readiness
does not wait for it, so a rebuilding index never takes publishing down.

A subscription is known when it exists or the index holds records of it (a deleted subscription's
history stays queryable for ``history.retention``); an unknown one, like an event without records, is
a 404.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import orjson
from aiohttp import web

from fanout.api.context import api
from fanout.api.jobs import epoch_ms
from fanout.api.problems import Problem, not_found
from fanout.api.validation import PARAMS
from fanout.history import views
from fanout.history.indexer import HistoryIndexer
from fanout.history.lock import IndexInUse
from fanout.history.queries import AttemptQuery, InvalidCursor
from fanout.history.record import Outcome
from fanout.history.schema import IndexCorrupt
from fanout.history.status import HistoryStatus
from fanout.history.store import QueryTimeout
from fanout.model.errors import ConfigError

T = TypeVar("T")
QUERY_THREADS = 4
MAX_PENDING = 64  # queries running or waiting for a thread; more are answered 503 at once
RETRY_AFTER = "5"

routes = web.RouteTableDef()


class History:
    """The index this replica keeps and the threads its queries run on. ``payload_bytes``: the most of
    an event's payload shown (``history.payload_bytes``)."""

    def __init__(self, indexer: HistoryIndexer, payload_bytes: int) -> None:
        self.indexer = indexer
        self.store = indexer.store
        self.payload_bytes = payload_bytes
        self._threads = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="fanout-history-query")
        self.pending = 0

    def status(self) -> HistoryStatus:
        return self.indexer.status()

    async def start(self) -> None:
        """Open the index and start indexing; ``ConfigError`` naming ``history.path`` when another
        process keeps the file or it cannot be created or opened."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.indexer.start)
        except IndexInUse as exc:
            raise ConfigError(f"{exc}: give each API process its own history.path") from None
        except (OSError, sqlite3.Error) as exc:
            self.indexer.store.close()
            raise ConfigError(f"history.path {self.store.path}: cannot open the index there: {exc}") from None

    async def stop(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self.indexer.stop)

    async def query(self, run: Callable[[], T]) -> T:
        """``run()`` on a query thread, once the index can answer and fewer than ``MAX_PENDING``
        queries are in progress (503 otherwise)."""
        status = self.status()
        if status.error is not None:
            raise Problem(503, f"the history index stopped: {status.error}")
        if not status.caught_up:
            behind = "" if status.lag_records is None else f" ({status.lag_records} records to go)"
            raise Problem(
                503,
                f"this replica's history index is still reading the attempts topic{behind}; try again soon",
                headers={"Retry-After": RETRY_AFTER},
            )
        if self.pending >= MAX_PENDING:
            raise Problem(
                503, "too many history queries in progress; try again soon", headers={"Retry-After": "1"}
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, run)
        except QueryTimeout as exc:
            raise Problem(503, str(exc)) from None
        except IndexCorrupt:
            raise Problem(
                503,
                "the history index is being rebuilt from the attempts topic",
                headers={"Retry-After": "30"},
            ) from None
        finally:
            self.pending -= 1


def history(request: web.Request) -> History:
    found = api(request).history
    if found is None:
        raise Problem(503, "this API process keeps no history index")
    return found


def _bad(field: str, message: str) -> Problem:
    return Problem(400, f"{field} is invalid: {message}", errors=[{"field": field, "message": message}])


def attempt_query(params: dict[str, object]) -> AttemptQuery:
    """The filters of ``.../attempts`` from its validated parameters (400 for what the document cannot
    express: a date-time without a zone, an empty range)."""
    since = epoch_ms(str(params["since"]), "query.since") if "since" in params else None
    until = epoch_ms(str(params["until"]), "query.until") if "until" in params else None
    if since is not None and until is not None and until <= since:
        raise _bad("query.until", "must be later than since")
    outcome = params.get("outcome")
    status = params.get("status")
    limit = params.get("limit", 50)
    cursor = params.get("cursor")
    return AttemptQuery(
        outcome=None if outcome is None else "failed" if outcome == "failed" else Outcome(str(outcome)),
        status=status if isinstance(status, int) else None,
        since_ms=since,
        until_ms=until,
        limit=limit if isinstance(limit, int) else 50,
        cursor=cursor if isinstance(cursor, str) else None,
    )


def stats_window(params: dict[str, object]) -> tuple[str, int, int | None]:
    """(window text, its seconds, the series step in seconds or None) from ``.../stats`` parameters."""
    window = str(params.get("window", "1h"))
    try:
        seconds = views.window_seconds(window)
    except ValueError as exc:
        raise _bad("query.window", str(exc)) from None
    buckets = params.get("buckets")
    if buckets is None:
        return window, seconds, None
    try:
        return window, seconds, views.step_seconds(seconds, int(str(buckets)))
    except ValueError as exc:
        raise _bad("query.buckets", str(exc)) from None


@routes.get("/v1/events/{id}")
async def get_event(request: web.Request) -> web.Response:
    h = history(request)
    event_id = request.match_info["id"]
    found = await h.query(lambda: h.store.event(event_id))
    if found is None:
        raise not_found(f"event {event_id!r} (no attempt record of it within history.retention)")
    return _json(views.event_json(found, h.payload_bytes))


def _unknown(sub: str) -> Problem:
    return not_found(f"subscription {sub!r} (it does not exist and the history holds no record of it)")


@routes.get("/v1/subscriptions/{id}/attempts")
async def list_attempts(request: web.Request) -> web.Response:
    h = history(request)
    sub = request.match_info["id"]
    query = attempt_query(request[PARAMS])
    live = api(request).live.get(sub) is not None

    def run() -> dict[str, object] | None:
        if not live and not h.store.knows(sub):
            return None
        return views.page_json(h.store.attempts(sub, query), h.payload_bytes)

    try:
        found = await h.query(run)
    except InvalidCursor as exc:
        raise _bad("query.cursor", str(exc)) from None
    if found is None:
        raise _unknown(sub)
    return _json(found)


@routes.get("/v1/subscriptions/{id}/stats")
async def subscription_stats(request: web.Request) -> web.Response:
    h = history(request)
    sub = request.match_info["id"]
    window, seconds, step = stats_window(request[PARAMS])
    live = api(request).live.get(sub) is not None

    def run() -> dict[str, object] | None:
        if not live and not h.store.knows(sub):
            return None
        stats = h.store.stats(sub, seconds)
        series = None if step is None else h.store.series(sub, seconds, step)
        return views.stats_json(stats, window, series, step)

    found = await h.query(run)
    if found is None:
        raise _unknown(sub)
    return _json(found)


def _json(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")
