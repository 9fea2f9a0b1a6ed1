"""The subscription page: definition (no secrets), health over 24 h, recent attempts, and the actions.

Every action is the API's own operation (``calls.call``): enable, disable (with a reason), send a test
event, rotate the secret (shown once, with the grace period), edit the rate limit (a merge patch).
The writes send ``If-Match`` with the version the page was rendered from, so a concurrent change is a
412 that the page explains, never a silent overwrite. The answer is the page again, with a notice
(and the status of the API's answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from fanout.api.console.calls import Answer, call
from fanout.api.console.guard import redirect
from fanout.api.console.pages import history
from fanout.api.console.render import WHO, page
from fanout.api.context import API

routes = web.RouteTableDef()

DAY = 86400.0
HOURS = 24
RECENT = 50


@dataclass(frozen=True)
class Notice:
    ok: bool
    text: str
    secret: str | None = None
    expires: tuple[str, ...] = ()


class FormError(Exception):
    pass


def _path(sub_id: str, tail: str = "") -> str:
    return f"/v1/subscriptions/{quote(sub_id, safe='')}{tail}"


def _number(form: Any, name: str, label: str) -> float | None:
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise FormError(f"{label} must be a number.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise FormError(f"{label} must be a number.")
    return value


def _failure(answer: Answer) -> Notice:
    if answer.status == 412:
        text = (
            "Not saved: this subscription was changed by someone else after this page was loaded. "
            "The page now shows the current definition; check it and try again."
        )
    elif answer.status == 403:
        text = f"Not allowed: {answer.detail}."
    else:
        text = f"Not done ({answer.status}): {answer.detail}."
        errors = answer.body.get("errors") if isinstance(answer.body, dict) else None
        if errors:
            text += " " + "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    return Notice(False, text)


Acted = tuple[Answer, Notice]


async def _enable(request: web.Request, sub_id: str, form: Any, version: int | None) -> Acted:
    answer = await call(request, request[WHO], "POST", _path(sub_id, "/enable"), if_match=version)
    return answer, Notice(True, "Enabled: matching events are delivered again.")


async def _disable(request: web.Request, sub_id: str, form: Any, version: int | None) -> Acted:
    reason = str(form.get("reason", "")).strip()[:1024]
    body = {"reason": reason} if reason else None
    answer = await call(request, request[WHO], "POST", _path(sub_id, "/disable"), body=body, if_match=version)
    return answer, Notice(True, "Disabled: matching events now go to the dead letters.")


async def _test(request: web.Request, sub_id: str, form: Any, version: int | None) -> Acted:
    answer = await call(request, request[WHO], "POST", _path(sub_id, "/test"))
    result = answer.body if isinstance(answer.body, dict) else {}
    took = f"{result.get('latency_ms')} ms"
    if result.get("ok"):
        return answer, Notice(True, f"Test event delivered: HTTP {result.get('status')} in {took}.")
    return answer, Notice(
        False, f"Test event failed: {result.get('error') or result.get('status')} after {took}."
    )


async def _rotate(request: web.Request, sub_id: str, form: Any, version: int | None) -> Acted:
    grace = _number(form, "grace_seconds", "The grace period")
    body = {"grace_seconds": grace} if grace is not None else None
    path = _path(sub_id, "/rotate-secret")
    answer = await call(request, request[WHO], "POST", path, body=body, if_match=version)
    rotated = answer.body if isinstance(answer.body, dict) else {}
    expires = tuple(rotated.get("previous_secrets_expire_at", ()))
    text = "New secret made. Copy it now: it is not shown again."
    return answer, Notice(True, text, secret=rotated.get("secret"), expires=expires)


async def _rate_limit(request: web.Request, sub_id: str, form: Any, version: int | None) -> Acted:
    per_second = _number(form, "per_second", "The rate")
    burst = _number(form, "burst", "The burst")
    limit: dict[str, Any] | None = None
    if per_second is not None:
        limit = {"per_second": per_second}
        if burst is not None:
            if burst != int(burst):
                raise FormError("The burst must be a whole number.")
            limit["burst"] = int(burst)
    body = {"rate_limit": limit}
    answer = await call(request, request[WHO], "PATCH", _path(sub_id), body=body, if_match=version)
    text = f"Rate limit set to {per_second:g}/s." if per_second is not None else "Rate limit removed."
    return answer, Notice(True, text)


ACTIONS = {
    "enable": _enable,
    "disable": _disable,
    "test": _test,
    "rotate-secret": _rotate,
    "rate-limit": _rate_limit,
}


async def _act(request: web.Request, sub_id: str, action: str, form: Any) -> Acted:
    version_text = str(form.get("version", ""))
    if action != "test" and not version_text.isdigit():
        raise FormError("The form has no version; reload the page.")
    version = int(version_text) if version_text.isdigit() else None
    return await ACTIONS[action](request, sub_id, form, version)


async def _render(
    request: web.Request, sub_id: str, notice: Notice | None = None, status: int = 200
) -> web.Response:
    answer = await call(request, request[WHO], "GET", _path(sub_id))
    if not answer.ok:
        return page(request, "error.html", answer.status, title="Subscription", message=answer.detail)
    sub = answer.body
    failures_only = request.query.get("failures") == "1"
    store, history_state = history(request)
    stats = series = attempts = None
    if store is not None:
        stats = await store.stats(sub_id, DAY)
        series = await store.series(sub_id, DAY, HOURS)
        attempts = await store.attempts(sub_id, failures_only=failures_only, limit=RECENT)
    return page(
        request,
        "subscription.html",
        status,
        nav="overview",
        sub=sub,
        definition=orjson.dumps(sub, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
        notice=notice,
        history_state=history_state,
        stats=stats,
        series=series,
        attempts=attempts,
        failures_only=failures_only,
        secret_grace=request.config_dict[API].settings.api.secret_grace,
    )


@routes.get("/subscriptions/{id}")
async def subscription(request: web.Request) -> web.Response:
    return await _render(request, request.match_info["id"])


@routes.get("/subscriptions/{id}/{action}")
async def after_action(request: web.Request) -> web.Response:
    return redirect(f"/console/subscriptions/{quote(request.match_info['id'], safe='')}")


@routes.post("/subscriptions/{id}/{action}")
async def act(request: web.Request) -> web.Response:
    sub_id, action = request.match_info["id"], request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound()
    form = await request.post()
    try:
        answer, notice = await _act(request, sub_id, action, form)
    except FormError as exc:
        return await _render(request, sub_id, Notice(False, str(exc)), 400)
    if not answer.ok:
        return await _render(request, sub_id, _failure(answer), answer.status)
    return await _render(request, sub_id, notice)
