"""Request validation from the OpenAPI document: what the document says is invalid gets a 400 (or 415),
so the document and the code cannot drift apart.

For each operation: path, query and header parameters are converted to their schema's type and
validated (a scalar query parameter given twice is an error); the body's media type must be one the
operation lists (else 415; a Content-Type that is no valid media type at all is a 400); JSON bodies
are parsed (invalid JSON is a 400) and validated against the operation's schema. The results are
``request[PARAMS]`` and ``request[BODY]`` (parsed JSON, or the raw bytes for ``*/*`` bodies, or None
when an optional body is absent). Field errors never echo the offending value: it may be a secret.
Schemas are checked by ``fanout.api.schema_check`` (compiled once at start; a fast validator for valid
values, the reference one for the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fanout.api.connections import read_body
from fanout.api.problems import Problem
from fanout.api.schema_check import SchemaCheck
from fanout.api.schema_check import field_errors as field_errors
from fanout.model.wire_syntax import media_type

METHODS = ("get", "put", "post", "delete", "patch")
_NO_VALUE = object()


@dataclass
class Parameter:
    name: str
    where: str
    required: bool
    schema: dict[str, Any]
    check: SchemaCheck = field(init=False)
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.check = SchemaCheck(self.schema)
        self.label = f"{self.where}.{self.name}"

    def _convert(self, text: str) -> Any:
        kind = self.schema.get("type")
        try:
            if kind == "integer":
                if not text.strip().lstrip("-").isdigit():
                    raise ValueError
                return int(text)
            if kind == "number":
                return float(text)
        except ValueError:
            raise Problem(
                400,
                f"{self.where} parameter {self.name} is invalid",
                errors=[{"field": f"{self.where}.{self.name}", "message": f"must be of type {kind}"}],
            ) from None
        return text

    def read(self, request: web.Request) -> Any:
        values: list[str] | tuple[()]
        if self.where == "path":
            values = [request.match_info[self.name]] if self.name in request.match_info else ()
        elif self.where == "query":
            values = request.query.getall(self.name, ()) if request.query_string else ()
        else:
            values = request.headers.getall(self.name, ())
        where = self.label
        if not values:
            if self.required:
                raise Problem(
                    400, f"{where} is required", errors=[{"field": where, "message": "is required"}]
                )
            return _NO_VALUE
        if len(values) > 1:
            raise Problem(400, f"{where} is given more than once")
        value = self._convert(values[0])
        errors = self.check.errors(value, where)
        if errors:
            raise Problem(400, f"{where} is invalid", errors=errors)
        return value


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]
    parameters: list[Parameter]
    bodies: dict[str, SchemaCheck | None]
    body_required: bool
    name: str = field(init=False)  # the operationId (the path when there is none)
    scope: str | None = field(init=False)  # x-scope
    public: bool = field(init=False)  # security: []

    def __post_init__(self) -> None:
        self.name = str(self.spec.get("operationId", self.path))
        scope = self.spec.get("x-scope")
        self.scope = scope if isinstance(scope, str) else None
        self.public = self.spec.get("security") == []

    def read_params(self, request: web.Request) -> dict[str, Any]:
        found = {}
        headers, query = request.headers, request.query_string
        for param in self.parameters:
            if not param.required and (
                (param.where == "header" and param.name not in headers)
                or (param.where == "query" and not query)
            ):
                continue  # absent and optional: nothing to read
            value = param.read(request)
            if value is not _NO_VALUE:
                found[param.name] = value
        return found

    async def read_body(self, request: web.Request) -> Any:
        if not self.bodies:
            return None
        raw = await read_body(request)
        if not raw:
            if self.body_required:
                raise Problem(400, "a request body is required")
            return None
        if "*/*" in self.bodies:
            return raw
        given = request.headers.get("Content-Type")
        listed = given is not None and given in self.bodies  # exactly a listed media type: nothing to parse
        if listed:
            media = str(given)
        elif given is not None and media_type(given) is None:
            message = "must be a media type: type/subtype[; name=value]..."
            raise Problem(
                400,
                f"header.Content-Type is invalid: it {message}",
                errors=[{"field": "header.Content-Type", "message": message}],
            )
        else:
            media = request.content_type
        if media not in self.bodies:
            accepted = ", ".join(self.bodies)
            raise Problem(415, f"Content-Type {media or '(none)'} is not accepted here; use {accepted}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, f"the body is not valid JSON: {exc}", slug="invalid-json") from None
        check = self.bodies[media]
        if check is not None:
            errors = check.errors(body, "body")
            if errors:
                raise Problem(400, "the body is invalid", slug="invalid-body", errors=errors)
        return body


def operations(document: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    """Every operation of the document, by (METHOD, path template)."""
    found = {}
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            params = [
                Parameter(p["name"], p["in"], bool(p.get("required")), p.get("schema", {}))
                for p in _resolve_all(document, [*shared, *spec.get("parameters", [])])
            ]
            body = spec.get("requestBody", {})
            bodies = {
                media: (SchemaCheck(content["schema"]) if content.get("schema") else None)
                for media, content in body.get("content", {}).items()
            }
            found[(method.upper(), path)] = Operation(
                method.upper(), path, spec, params, bodies, bool(body.get("required"))
            )
    return found


def _resolve_all(document: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    resolved = []
    for item in items:
        ref = item.get("$ref")
        if isinstance(ref, str):
            node: Any = document
            for part in ref.removeprefix("#/").split("/"):
                node = node[part]
            item = node
        resolved.append(item)
    return resolved


OPERATIONS: web.AppKey[dict[tuple[str, str], Operation]] = web.AppKey("operations")
PARAMS: web.RequestKey[dict[str, Any]] = web.RequestKey("params")
BODY: web.RequestKey[Any] = web.RequestKey("body")


def operation_of(request: web.Request) -> Operation | None:
    """The request's operation in the document (None for a route it does not describe)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return request.app[OPERATIONS].get((request.method, resource.canonical))
