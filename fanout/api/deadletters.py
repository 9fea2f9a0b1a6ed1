"""``GET /v1/dead-letters`` (browse, a page at a time) and ``POST /v1/dead-letters/replay``.

Both read the dead-letter topic in a thread (``fanout.control.deadletters``, ``fanout.control.replays``).
Replay re-enqueues to the first retry tier, addressed to each record's subscription (DESIGN.md,
"Replays"), and answers with the counts once the broker acknowledged every record.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from fanout.api.context import api
from fanout.api.jobs import epoch_ms
from fanout.api.problems import Problem
from fanout.api.validation import BODY, PARAMS
from fanout.control import replays
from fanout.control.deadletters import BadCursor, DeadLetterFilter, browse, decode_cursor
from fanout.model.errors import FanoutError

routes = web.RouteTableDef()


@routes.get("/v1/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    app = api(request)
    params = request[PARAMS]
    where = DeadLetterFilter(
        subscription=params.get("subscription"),
        since_ms=epoch_ms(params["since"], "query.since") if "since" in params else None,
        until_ms=epoch_ms(params["until"], "query.until") if "until" in params else None,
    )
    try:
        cursor = decode_cursor(params["cursor"]) if "cursor" in params else None
    except BadCursor as exc:
        raise Problem(400, str(exc), errors=[{"field": "query.cursor", "message": str(exc)}]) from None
    loop = asyncio.get_running_loop()
    try:
        page = await loop.run_in_executor(None, browse, app.settings, where, params.get("limit", 50), cursor)
    except FanoutError as exc:
        raise Problem(503, f"the dead-letter topic could not be read: {exc}") from None
    return web.json_response({"items": page.items, "next_cursor": page.next_cursor})


@routes.post("/v1/dead-letters/replay")
async def replay_dead_letters(request: web.Request) -> web.Response:
    app = api(request)
    body = request[BODY]
    ids = None
    if "ids" in body:
        ids = frozenset((int(p), int(o)) for p, _, o in (i.partition("-") for i in body["ids"]))
    where = DeadLetterFilter(
        subscription=body.get("subscription"),
        since_ms=epoch_ms(body["since"], "body/since") if "since" in body else None,
        until_ms=epoch_ms(body["until"], "body/until") if "until" in body else None,
        ids=ids,
        event_ids=frozenset(body["event_ids"]) if "event_ids" in body else None,
    )
    loop = asyncio.get_running_loop()
    try:
        counts = await loop.run_in_executor(
            None, replays.replay_dead_letters, app.settings, where, body.get("limit")
        )
    except FanoutError as exc:
        raise Problem(503, f"the replay did not complete: {exc}") from None
    return web.json_response({"replayed": counts.replayed, "skipped": counts.skipped})
