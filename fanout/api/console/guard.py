"""The console's middleware: security headers on every answer, a session for every page but the
sign-in page and the assets, and a CSRF check on every state-changing request.

- **Headers.** A strict CSP (``default-src 'self'``, no inline script or style, no framing, forms post
  only here), ``nosniff``, no referrer, and ``Cache-Control: no-store`` on pages (they can show a
  secret once, and data a shared machine should not keep).
- **Session.** No valid cookie: a page request goes to the sign-in page (303, with ``next``); an
  htmx request gets 401 with ``HX-Redirect``; any other request 401. The session's credential is
  checked again on every request (``Authenticator.check``): when that fails (an expired JWT, a key no
  longer configured), the cookie is cleared and the person signs in again.
- **Body.** A request other than GET/HEAD is read by the API's read deadline (``api.read_timeout``,
  else 408) and within ``api.max_body_bytes``, before anything else.
- **CSRF.** A request other than GET/HEAD needs the session's token (``X-CSRF-Token`` or the form's
  ``csrf_token``) and must not come from another site (``Sec-Fetch-Site``); else 403 and nothing runs.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web

from fanout.api.auth import AUTHENTICATOR
from fanout.api.connections import read_body
from fanout.api.console.calls import PRISTINE
from fanout.api.console.render import SESSION, WHO, page
from fanout.api.console.session import COOKIE, CSRF_FIELD, CSRF_HEADER, SESSIONS
from fanout.api.problems import Handler, Problem

log = logging.getLogger("fanout.api.console")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STATIC = "/console/static/"
PUBLIC = ("/console/login",)
SAFE_METHODS = ("GET", "HEAD")
SAME_SITE = (None, "same-origin", "none")


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def safe_next(target: str | None) -> str:
    """A place under ``/console/`` to go after signing in (never another host)."""
    if (
        not target
        or not target.startswith("/console/")
        or target.startswith("/console/login")
        or any(c in target for c in "\\\r\n\t")
        or "//" in target
    ):
        return "/console/"
    return target


def to_sign_in(request: web.Request, message: str = "") -> web.Response:
    query = f"?next={quote(request.path_qs, safe='')}" if request.method in SAFE_METHODS else ""
    if message:
        query += ("&" if query else "?") + f"ended={quote(message, safe='')}"
    location = "/console/login" + query
    if request.headers.get("HX-Request"):
        return web.Response(status=401, headers={"HX-Redirect": location})
    if request.method in SAFE_METHODS:
        return redirect(location)
    return page(request, "error.html", 401, title="Sign in", message="Your session has ended: sign in again.")


def refused(request: web.Request, status: int, message: str) -> web.Response:
    return page(request, "error.html", status, title="Refused", message=message)


async def _csrf_ok(request: web.Request, expected: str) -> bool:
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.post()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    return request.app[SESSIONS].same(token, expected)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[PRISTINE] = request.clone()
    if request.method not in SAFE_METHODS:
        await read_body(request)  # by the request's read deadline (408); request.post() reuses it
    if request.path.startswith(STATIC) or request.path in PUBLIC:
        return await handler(request)
    sessions = request.app[SESSIONS]
    session = sessions.open(request.cookies.get(COOKIE))
    if session is None:
        return to_sign_in(request)
    try:
        principal = await request.config_dict[AUTHENTICATOR].check(session.credential)
    except Problem as problem:
        if problem.status != 401:
            return refused(request, problem.status, problem.detail)
        response = to_sign_in(request, f"the credential was refused: {problem.detail}")
        sessions.clear_cookie(response, request)
        return response
    request[SESSION] = session
    request[WHO] = principal
    if request.method not in SAFE_METHODS:
        if request.headers.get("Sec-Fetch-Site") not in SAME_SITE:
            return refused(request, 403, "This request came from another site; nothing was done.")
        if not await _csrf_ok(request, sessions.csrf(session)):
            return refused(
                request, 403, "The form's CSRF token is missing or wrong; nothing was done. Reload the page."
            )
    return await handler(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = "There is no such page." if exc.status == 404 else exc.reason
        response = page(request, "error.html", exc.status, title=exc.reason, message=message)
    except Problem as problem:
        response = page(request, "error.html", problem.status, title="Refused", message=problem.detail)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        response = page(request, "error.html", 500, title="Error", message="Unexpected error; see the log.")
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(STATIC):
        response.headers["Cache-Control"] = "no-store"
    return response
