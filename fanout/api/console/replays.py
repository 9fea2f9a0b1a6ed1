"""Replays: start a time-range replay of a subscription (``POST /v1/subscriptions/{id}/replay``) and
watch the job (``GET /v1/jobs/{id}``; the page polls it with htmx while it runs, and a link reloads it
without script). The list shows the jobs this instance started (the API keeps them in memory)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from fanout.api.console.calls import call
from fanout.api.console.deadletters import FilterError, rfc3339
from fanout.api.console.guard import redirect
from fanout.api.console.render import WHO, page
from fanout.api.context import API

routes = web.RouteTableDef()

RECENT_JOBS = 20
JOB_ID = r"job_[0-9a-f]{1,16}_[0-9a-f]{8}"


async def _form(
    request: web.Request, status: int = 200, error: str = "", values: dict[str, str] | None = None
) -> web.Response:
    who = request[WHO]
    listed = await call(request, who, "GET", "/v1/subscriptions")
    subscriptions = [s["id"] for s in listed.body["items"]] if listed.ok else []
    jobs = []
    if "dead-letters:read" in who.scopes:
        known = request.config_dict[API].jobs.jobs.values()
        jobs = sorted((j.view() for j in known), key=lambda v: str(v["started_at"]), reverse=True)[
            :RECENT_JOBS
        ]
    return page(
        request,
        "replays.html",
        status,
        nav="replays",
        subscriptions=subscriptions,
        jobs=jobs,
        error=error,
        values=values or {},
    )


@routes.get("/replays")
async def replays(request: web.Request) -> web.Response:
    return await _form(request, values={"subscription": request.query.get("subscription", "")[:256]})


@routes.post("/replays")
async def start(request: web.Request) -> web.Response:
    form = await request.post()
    values = {k: str(form.get(k, "")).strip()[:256] for k in ("subscription", "since", "until")}
    if not values["subscription"] or not values["since"]:
        return await _form(request, 400, "Choose a subscription and a start time.", values)
    try:
        body = {"since": rfc3339(values["since"], "since")}
        if values["until"]:
            body["until"] = rfc3339(values["until"], "until")
    except FilterError as exc:
        return await _form(request, 400, str(exc), values)
    path = f"/v1/subscriptions/{quote(values['subscription'], safe='')}/replay"
    answer = await call(request, request[WHO], "POST", path, body=body)
    if not answer.ok:
        return await _form(request, answer.status, f"Not started ({answer.status}): {answer.detail}.", values)
    return redirect(f"/console/replays/{answer.body['id']}")


@routes.get("/replays/{job:" + JOB_ID + "}")
async def job(request: web.Request) -> web.Response:
    answer = await call(request, request[WHO], "GET", f"/v1/jobs/{request.match_info['job']}")
    if not answer.ok:
        return page(request, "error.html", answer.status, title="Replay", message=answer.detail)
    return page(request, "job.html", nav="replays", job=answer.body)
