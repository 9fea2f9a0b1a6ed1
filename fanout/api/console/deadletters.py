"""Dead letters: browse with filters (subscription, reason, time), select some or all, replay.

Browsing is ``GET /v1/dead-letters`` a page at a time; the reason filter (a case-insensitive
substring, which the API does not have) applies to each page here. Replaying is
``POST /v1/dead-letters/replay``: the selected ids, or everything matching the filter. With a reason
filter, "all" means the ids of the matching dead letters, gathered page by page up to the API's
limit of ``MAX_IDS`` per call (the notice says when more matched).

Times in the form are UTC (``datetime-local`` inputs have no zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from fanout.api.console.calls import call
from fanout.api.console.render import WHO, page

routes = web.RouteTableDef()

PAGE = 100
SCAN_PAGE = 1000
MAX_IDS = 10_000
MAX_PAGES = 100
FILTERS = ("subscription", "reason", "since", "until")


class FilterError(Exception):
    pass


@dataclass(frozen=True)
class Filter:
    subscription: str = ""
    reason: str = ""
    since: str = ""
    until: str = ""

    def query(self) -> dict[str, str]:
        out = {}
        if self.subscription:
            out["subscription"] = self.subscription
        for name in ("since", "until"):
            value = getattr(self, name)
            if value:
                out[name] = rfc3339(value, name)
        return out

    def keeps(self, item: dict[str, Any]) -> bool:
        return not self.reason or self.reason.lower() in str(item.get("reason", "")).lower()


def rfc3339(text: str, name: str) -> str:
    """A ``datetime-local`` value (UTC) or an RFC 3339 time, as RFC 3339 with a zone."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name} is not a date and time (YYYY-MM-DDTHH:MM, UTC).") from None
    if when.tzinfo is None:
        return when.isoformat(timespec="seconds") + "Z"
    return when.isoformat(timespec="seconds")


def filter_of(values: Any) -> Filter:
    return Filter(*(str(values.get(name, "")).strip()[:256] for name in FILTERS))


async def _page(request: web.Request, where: Filter, cursor: str | None, limit: int) -> tuple[int, Any]:
    query = {**where.query(), "limit": str(limit)}
    if cursor:
        query["cursor"] = cursor
    answer = await call(request, request[WHO], "GET", "/v1/dead-letters", query=query)
    return answer.status, answer.body if answer.ok else answer.detail


async def _render(
    request: web.Request, where: Filter, notice: str = "", ok: bool = True, status: int = 200
) -> web.Response:
    cursor = request.query.get("cursor") if request.method == "GET" else None
    items: list[dict[str, Any]] = []
    next_cursor = None
    error = ""
    try:
        code, body = await _page(request, where, cursor, PAGE)
    except FilterError as exc:
        code, body = 400, str(exc)
    if code == 200:
        items = [d for d in body["items"] if where.keeps(d)]
        next_cursor = body["next_cursor"]
    else:
        error, status = str(body), (status if status != 200 else code)
    return page(
        request,
        "dead_letters.html",
        status,
        nav="dead-letters",
        where=where,
        items=items,
        next_cursor=next_cursor,
        error=error,
        notice=notice,
        notice_ok=ok,
    )


@routes.get("/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    return await _render(request, filter_of(request.query))


async def _matching_ids(request: web.Request, where: Filter) -> tuple[list[str], bool]:
    """The ids of the dead letters matching ``where``, and whether more matched than were gathered."""
    ids: list[str] = []
    cursor = None
    for _ in range(MAX_PAGES):
        code, body = await _page(request, where, cursor, SCAN_PAGE)
        if code != 200:
            raise FilterError(str(body))
        ids.extend(d["id"] for d in body["items"] if where.keeps(d))
        cursor = body["next_cursor"]
        if len(ids) > MAX_IDS:
            return ids[:MAX_IDS], True
        if cursor is None:
            return ids, False
    return ids, True


@routes.post("/dead-letters/replay")
async def replay(request: web.Request) -> web.Response:
    form = await request.post()
    where = filter_of(form)
    truncated = False
    try:
        if form.get("scope") == "all":
            if where.reason:
                ids, truncated = await _matching_ids(request, where)
                body: dict[str, Any] = {"ids": ids}
            else:
                body = where.query()
        else:
            ids = [str(i) for i in form.getall("ids", [])][:MAX_IDS]
            if not ids:
                return await _render(request, where, "Select at least one dead letter to replay.", False, 400)
            body = {"ids": ids}
    except FilterError as exc:
        return await _render(request, where, str(exc), False, 400)
    if "ids" in body and not body["ids"]:
        return await _render(request, where, "No dead letter matches the filter: nothing was replayed.")
    answer = await call(request, request[WHO], "POST", "/v1/dead-letters/replay", body=body)
    if not answer.ok:
        return await _render(
            request, where, f"Not replayed ({answer.status}): {answer.detail}.", False, answer.status
        )
    counts = answer.body
    text = f"Replayed {counts['replayed']} dead letters"
    text += f" ({counts['skipped']} skipped: records without a subscription)." if counts["skipped"] else "."
    if truncated:
        text += " Not every match was gathered (the API takes 10,000 ids a call); replay again for the rest."
    return await _render(request, where, text)
