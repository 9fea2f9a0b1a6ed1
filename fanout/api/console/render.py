"""Pages from Jinja2 templates (``templates/``), autoescaped, with what every page needs in context:
who is signed in, the CSRF token, and ``can(method, path)`` to show only the controls the
credential's scopes allow."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from fanout.api.auth import Principal
from fanout.api.console.calls import ROOT, allowed
from fanout.api.console.charts import health_chart, sparkline
from fanout.api.console.session import CSRF_FIELD, SESSIONS, Session

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION: web.RequestKey[Session] = web.RequestKey("console_session")
WHO: web.RequestKey[Principal] = web.RequestKey("console_principal")


def utc(t: float | None) -> str:
    if t is None:
        return "—"
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "—"


def ago(t: float | None) -> str:
    if t is None:
        return "never"
    seconds = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=utc, ago=ago, pct=pct, ms=ms, sparkline=sparkline, health_chart=health_chart)
    return env


ENVIRONMENT = _environment()


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """``template`` rendered for the signed-in person (or the sign-in page when there is none)."""
    session = request.get(SESSION)
    principal = request.get(WHO)
    root = request.app[ROOT]

    def can(method: str, path: str) -> bool:
        return principal is not None and allowed(root, principal, method, path)

    def has(scope: str) -> bool:
        return principal is not None and scope in principal.scopes

    csrf = request.app[SESSIONS].csrf(session) if session is not None else context.pop("csrf", "")
    html = ENVIRONMENT.get_template(template).render(
        principal=principal,
        csrf=csrf,
        csrf_field=CSRF_FIELD,
        can=can,
        has=has,
        path=request.path,
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
