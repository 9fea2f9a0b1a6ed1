"""The console's actions and reads are API calls: the same route handlers, scopes and validation.

``ApiCaller.call`` runs one operation of the OpenAPI document in this process, for the signed-in
principal: it resolves the path with the API's router, refuses (403) a principal without the
operation's ``x-scope``, validates the parameters and the JSON body against the document exactly as
the ``validate`` middleware does, and awaits the route's handler. So a page can hide a button, but
what the server allows is decided here, by the same rules as ``/v1``, whatever the page showed.

The request handed to the handler is a clone of the console's request made before its body was read
(``PRISTINE``), with the method, path and headers of the API call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from fanout.api.auth import PRINCIPAL, Principal
from fanout.api.problems import Problem
from fanout.api.validation import BODY, OPERATIONS, PARAMS, Operation

PRISTINE: web.RequestKey[web.Request] = web.RequestKey("console_pristine")
ROOT: web.AppKey[web.Application] = web.AppKey("console_root")


@dataclass(frozen=True)
class Answer:
    """What the API answered: status, JSON body (a problem's on errors), headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("detail"), str):
            return str(self.body["detail"])
        return f"HTTP {self.status}"


def operation(root: web.Application, method: str, template: str) -> Operation:
    return root[OPERATIONS][(method, template)]


def allowed(root: web.Application, principal: Principal, method: str, template: str) -> bool:
    """Whether ``principal`` has the scope of the operation (what the pages use to show controls)."""
    scope = operation(root, method, template).scope
    return scope is None or scope in principal.scopes


def _problem(problem: Problem) -> Answer:
    body: dict[str, Any] = {"status": problem.status, "detail": problem.detail}
    if problem.errors:
        body["errors"] = problem.errors
    return Answer(problem.status, body)


def _body_of(response: web.StreamResponse) -> Any:
    if isinstance(response, web.Response) and isinstance(response.body, bytes) and response.body:
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return None
    return None


async def call(
    request: web.Request,
    principal: Principal,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    if_match: int | None = None,
) -> Answer:
    """Run ``method path`` (a concrete ``/v1`` path) as ``principal``; never raises for an API error."""
    root = request.app[ROOT]
    headers = CIMultiDict[str]()
    if body is not None:
        headers["Content-Type"] = "application/json"
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    url = URL(path).with_query(dict(query or {}))
    inner = request[PRISTINE].clone(method=method, rel_url=url, headers=headers)
    match = await root.router.resolve(inner)
    if match.http_exception is not None:
        return Answer(match.http_exception.status, {"detail": f"no API route {method} {path}"})
    match.add_app(root)
    match.freeze()
    inner._match_info = match
    resource = match.route.resource
    op = root[OPERATIONS].get((method, resource.canonical)) if resource is not None else None
    if op is None:
        return Answer(404, {"detail": f"no API operation {method} {path}"})
    if op.scope is not None and op.scope not in principal.scopes:
        return Answer(403, {"status": 403, "detail": f"this needs the scope {op.scope}"})
    try:
        inner[PARAMS] = op.read_params(inner)
        inner[BODY] = _checked_body(op, body)
        inner[PRINCIPAL] = principal
        response = await match.handler(inner)
    except Problem as problem:
        return _problem(problem)
    return Answer(response.status, _body_of(response), dict(response.headers))


def _checked_body(op: Operation, body: Any) -> Any:
    if body is None:
        if op.body_required:
            raise Problem(400, "a request body is required")
        return None
    if "application/json" not in op.bodies:
        raise Problem(415, "this operation takes no JSON body")
    check = op.bodies["application/json"]
    if check is not None:
        errors = check.errors(body, "body")
        if errors:
            raise Problem(400, "the body is invalid", slug="invalid-body", errors=errors)
    return body
