"""Read-only pages: the overview of every subscription, and event lookup (from the history)."""

from __future__ import annotations

import time

from aiohttp import web

from fanout.api.console.calls import call
from fanout.api.console.history import HISTORY, HistoryQueries
from fanout.api.console.overview import SORTS, rows, table, with_detail
from fanout.api.console.render import WHO, page

routes = web.RouteTableDef()

HISTORY_SCOPE = "deliveries:read"
HOUR = 3600.0
SPARK_BUCKETS = 6  # 10-minute buckets: the index's coarse rollup blocks, 7 rows a sparkline
MAX_QUERY = 200
MAX_EVENT_ID = 256


def history(request: web.Request) -> tuple[HistoryQueries | None, str]:
    """The history store and why it is not there: ``ok``, ``absent`` (none on this instance) or
    ``scope`` (the credential lacks ``deliveries:read``)."""
    store = request.config_dict.get(HISTORY)
    if store is None:
        return None, "absent"
    if HISTORY_SCOPE not in request[WHO].scopes:
        return None, "scope"
    return store, "ok"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


@routes.get("/")
async def overview(request: web.Request) -> web.Response:
    """The overview; its ``Server-Timing`` header says where the time went (``subscriptions``: the
    list, ``history``: the index's answers, ``render``: the table and the template)."""
    started = time.perf_counter()
    answer = await call(request, request[WHO], "GET", "/v1/subscriptions")
    if not answer.ok:
        return page(request, "error.html", answer.status, title="Overview", message=answer.detail)
    listed = time.perf_counter()
    store, history_state = history(request)
    query = request.query.get("q", "")[:MAX_QUERY]
    sort = request.query.get("sort", "id")
    sort = sort if sort in SORTS else "id"
    # every row's latency only to sort by it; ``detail`` gives the rows shown theirs
    health = await store.overview(HOUR, with_latency=sort == "p99") if store is not None else {}
    read = time.perf_counter() - listed
    descending = request.query.get("dir") == "desc"
    result = table(
        rows(answer.body["items"], health), query, sort, descending, _int(request.query.get("page"), 1)
    )
    if store is not None and result.rows:
        shown = {r.id: r.stats for r in result.rows}
        before = time.perf_counter()
        more = await store.detail(shown, HOUR, SPARK_BUCKETS)
        read += time.perf_counter() - before
        result = with_detail(result, more)
    response = page(
        request,
        "overview.html",
        nav="overview",
        table=result,
        q=query,
        sort=sort,
        descending=descending,
        history_state=history_state,
    )
    total = time.perf_counter() - started
    response.headers["Server-Timing"] = ", ".join(
        f"{name};dur={seconds * 1000:.1f}"
        for name, seconds in (
            ("subscriptions", listed - started),
            ("history", read),
            ("render", total - (listed - started) - read),
            ("total", total),
        )
    )
    return response


@routes.get("/events")
async def event_lookup(request: web.Request) -> web.Response:
    event_id = request.query.get("id", "").strip()
    store, history_state = history(request)
    status, found, error = 200, None, ""
    if len(event_id) > MAX_EVENT_ID:
        status, error = 400, f"An event id is at most {MAX_EVENT_ID} characters."
    elif event_id and store is not None:
        found = await store.event(event_id)
        if found is None:
            status = 404
    return page(
        request,
        "event.html",
        status,
        nav="events",
        event_id=event_id[:MAX_EVENT_ID],
        found=found,
        error=error,
        history_state=history_state,
    )
