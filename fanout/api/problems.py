"""RFC 9457 problem details: every 4xx and 5xx the API sends is ``application/problem+json``.

Handlers raise ``Problem``; ``error_response`` (called by the API's middleware) renders it, turns
aiohttp's own HTTP errors (404 for an unknown path, 405, 413 from the body limit) into problems too, and
answers anything unexpected with a 500 problem whose detail names no internals (the traceback goes to
the log).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("fanout.api")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:fanout:problem:"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
SLUGS = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    409: "conflict",
    412: "precondition-failed",
    413: "too-large",
    415: "unsupported-media-type",
    429: "too-many-connections",
    500: "internal",
    503: "unavailable",
}


class Problem(Exception):
    """An error answer. ``errors`` lists field problems: ``[{"field": ..., "message": ...}]``."""

    def __init__(
        self,
        status: int,
        detail: str,
        slug: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or SLUGS.get(status, "error")
        self.errors = errors
        self.headers = dict(headers or {})

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return web.Response(
            status=self.status, body=orjson.dumps(body), content_type=MEDIA_TYPE, headers=self.headers
        )


def not_found(what: str) -> Problem:
    return Problem(404, f"{what} does not exist")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.Request, error: Exception) -> web.Response:
    """The problem answer for what a handler raised: a ``Problem`` as it is, aiohttp's own HTTP errors
    (4xx/5xx) as problems, anything else a 500 whose detail names no internals (the traceback is
    logged). An ``HTTPException`` below 400 (a redirect) is not an error: it is raised again."""
    if isinstance(error, Problem):
        return error.response(request.path)
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        detail = {
            404: f"no route {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the body is larger than the limit (api.max_body_bytes)",
        }.get(error.status, error.reason)
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return Problem(error.status, detail, headers=headers).response(request.path)
    log.error("unexpected error in %s %s", request.method, request.path, exc_info=error)
    return Problem(500, "unexpected error; see the server log").response(request.path)
