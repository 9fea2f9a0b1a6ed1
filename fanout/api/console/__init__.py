"""The web console, served by ``fanout api`` at ``/console/``: same process, same credentials.

Pages are rendered on the server (Jinja2 templates, ``templates/``) and enhanced by htmx (vendored
under ``static/`` with its licence) for partial updates; every page works without script. Modules:

- ``session``: sealed session cookies, CSRF tokens, sign-out revocation.
- ``guard``: the middleware (security headers and CSP, session, CSRF).
- ``calls``: actions and reads run the API's own operations in-process, scope-checked.
- ``signin``, ``pages`` (overview, event lookup), ``subscription``, ``deadletters``, ``replays``.
- ``history``: the ``HistoryQueries`` Protocol the history-backed parts read through; ``indexed``
  implements it over the delivery-history index (``use_history``).
- ``overview``, ``charts``, ``render``: the overview table, inline SVG charts, templates.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from fanout.api.console import deadletters, pages, replays, signin, subscription
from fanout.api.console.calls import ROOT
from fanout.api.console.guard import guard
from fanout.api.console.history import HISTORY as HISTORY
from fanout.api.console.history import HistoryQueries as HistoryQueries
from fanout.api.console.indexed import OVERVIEW_MAX_AGE, IndexedHistory
from fanout.api.console.session import SESSIONS, Sessions
from fanout.config import ConsoleSettings
from fanout.history.store import HistoryStore

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def _to_console(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/console/"})


def setup_console(app: web.Application, settings: ConsoleSettings) -> None:
    """Mount the console on ``app`` (the API's application) at ``/console/``, if enabled."""
    if not settings.enabled:
        return
    console = web.Application(middlewares=[guard])
    console[ROOT] = app
    console[SESSIONS] = Sessions(settings)
    for module in (signin, pages, subscription, deadletters, replays):
        console.router.add_routes(module.routes)
    console.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/console", _to_console)
    app.add_subapp("/console/", console)


def use_history(app: web.Application, store: HistoryStore, max_age: float = OVERVIEW_MAX_AGE) -> None:
    """Back the console's history pages with ``store`` (kept current by ``fanout.history.indexer``);
    call it before ``app`` starts. Without it those pages say the history is not available here.
    ``max_age``: seconds an overview answer is reused (``IndexedHistory``)."""
    app[HISTORY] = IndexedHistory(store, max_age)
