"""Signing in (an API key or a JWT, checked like any API credential) and signing out."""

from __future__ import annotations

from aiohttp import web

from fanout.api.auth import AUTHENTICATOR
from fanout.api.console.guard import redirect, safe_next
from fanout.api.console.render import SESSION, page
from fanout.api.console.session import COOKIE_PATH, CSRF_FIELD, LOGIN_COOKIE, MAX_CREDENTIAL_CHARS, SESSIONS
from fanout.api.problems import Problem

routes = web.RouteTableDef()


def _form(
    request: web.Request, status: int = 200, error: str = "", next_url: str = "/console/"
) -> web.Response:
    sessions = request.app[SESSIONS]
    nonce = sessions.login_nonce(request)
    fresh = web.Response()
    if nonce is None:
        nonce = sessions.set_login_nonce(fresh, request)
    ended = request.query.get("ended", "")[:300]
    response = page(
        request,
        "login.html",
        status,
        csrf=sessions.login_csrf(nonce),
        error=error,
        ended=ended,
        next_url=next_url,
    )
    for name, morsel in fresh.cookies.items():
        response.cookies[name] = morsel
    return response


@routes.get("/login")
async def sign_in_form(request: web.Request) -> web.Response:
    return _form(request, next_url=safe_next(request.query.get("next")))


@routes.post("/login")
async def sign_in(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    form = await request.post()
    next_url = safe_next(str(form.get("next", "")))
    nonce = sessions.login_nonce(request)
    token = form.get(CSRF_FIELD)
    if nonce is None or not sessions.same(
        token if isinstance(token, str) else None, sessions.login_csrf(nonce)
    ):
        return _form(
            request, 403, "The sign-in form expired or its CSRF token is missing; try again.", next_url
        )
    credential = str(form.get("credential", "")).strip()
    if not credential:
        return _form(request, 400, "Enter an API key or a token.", next_url)
    if len(credential) > MAX_CREDENTIAL_CHARS:
        return _form(
            request, 400, f"That credential is longer than {MAX_CREDENTIAL_CHARS} characters.", next_url
        )
    try:
        await request.config_dict[AUTHENTICATOR].check(credential)
    except Problem as problem:
        status = 401 if problem.status == 401 else problem.status
        return _form(request, status, f"Not signed in: {problem.detail}.", next_url)
    session = sessions.new(credential)
    response = redirect(next_url)
    sessions.set_cookie(response, request, session)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


@routes.post("/logout")
async def sign_out(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    session = request.get(SESSION)
    if session is not None:
        sessions.revoke(session)
    response = redirect("/console/login")
    sessions.clear_cookie(response, request)
    return response
