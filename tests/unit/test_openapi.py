"""The OpenAPI document, the routes, the JSON Schemas and the models stay in step."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from jsonschema import Draft202012Validator

from fanout.api.app import build_app
from fanout.api.openapi import SCHEMA_FILES, bundle, load_schema, validator
from fanout.api.subscriptions import writable
from fanout.config import SCOPES, Settings
from fanout.control.deadletters import view
from fanout.control.jobs import Job
from fanout.model.subscription import Subscription
from tests.unit.factories import make_sub

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    doc = bundle()
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method.upper() in METHODS
    }


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = build_app(Settings())
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method in METHODS
        and route.resource is not None
        and not route.resource.canonical.startswith("/console")  # the web console: pages, not the API
    }
    assert routes == set(operations())
    assert ("GET", "/metrics") in routes, "Prometheus scrapes the API too"


def test_every_operation_documents_its_auth_and_errors() -> None:
    shared = bundle()["components"]["responses"]
    for (method, path), op in operations().items():
        responses = {
            status: shared[r["$ref"].rsplit("/", 1)[1]] if "$ref" in r else r
            for status, r in op["responses"].items()
        }
        public = op.get("security") == []
        if path.startswith("/v1") and not public:
            assert op.get("x-scope") in SCOPES, (method, path)
            assert {"401", "403"} <= set(responses), (method, path)
        if "requestBody" in op and method != "GET":
            assert "400" in responses and "413" in responses, (method, path)
        for status, response in responses.items():
            content = response.get("content", {})
            if int(status) >= 400 and path.startswith("/v1"):
                assert list(content) == ["application/problem+json"], (method, path, status)
            for media in content.values():
                assert "schema" in media, (method, path, status)


def test_every_reference_resolves() -> None:
    doc = bundle()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
    schemathesis.openapi.from_dict(doc)  # the document loads as OpenAPI 3.1


@pytest.mark.parametrize("name", list(SCHEMA_FILES))
def test_schemas_are_versioned_and_closed(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].startswith("urn:fanout:schema:") and schema["$id"].endswith(":v1")

    def objects(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
        found = []
        if isinstance(node, dict):
            if "properties" in node:
                found.append((where, node))
            for key, value in node.items():
                found += objects(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found += objects(value, f"{where}/{i}")
        return found

    for where, obj in objects(schema, name):
        if where.endswith("/$defs/cloudevent"):
            assert isinstance(obj["additionalProperties"], dict), "CloudEvents extensions, typed"
            continue
        assert obj.get("additionalProperties") is False, where


def test_the_subscription_schema_matches_the_model() -> None:
    schema = load_schema("subscription.schema.json")
    stored_only = {"version", "disabled_reason", "previous_secrets", "previous_ed25519_keys"}
    assert set(schema["properties"]) == set(Subscription.model_fields) - stored_only
    full = make_sub(
        auth={"type": "basic", "username": "u", "password": "p"},
        client_certificate={"cert_file": "/c.pem", "key_file": "/k.pem"},
        rate_limit={"per_second": 3},
        previous_secrets=[{"secret": make_sub().secrets[0], "expires_at": "2999-01-01T00:00:00Z"}],
        version=4,
    )
    check = validator({"$ref": "#/components/schemas/Subscription.view"})
    for sub in (make_sub(version=1), full):
        public = sub.public()
        check.validate(public)
        assert set(public) == set(load_schema("subscription.schema.json")["$defs"]["view"]["required"])
    # what PATCH merges into is a valid write body
    validator({"$ref": "#/components/schemas/Subscription"}).validate(writable(full))


def test_the_dead_letter_and_job_views_match_their_schemas() -> None:
    headers = [
        ("fanout-subscription", b"crm"),
        ("fanout-attempt", b"3"),
        ("fanout-origin-topic", b"users"),
        ("fanout-origin-partition", b"1"),
        ("fanout-origin-offset", b"42"),
        ("fanout-origin-timestamp", b"1764324000000"),
        ("fanout-first-attempt", b"1764324000000"),
        ("fanout-event-id", b"e1"),
        ("fanout-reason", b"retries exhausted"),
        ("fanout-status", b"503"),
        ("traceparent", None),
    ]
    check = validator({"$ref": "#/components/schemas/DeadLetter"})
    full = view(2, 7, 1764324001000, b"k", b'{"event": "x"}' * 500, headers, preview=100)
    assert full["payload_truncated"] and full["payload_bytes"] == 7000 and full["attempts"] == 3
    check.validate(full)
    poison = view(0, 1, 1764324001000, None, b"\xff\xfe", [("fanout-reason", b"poison record: not JSON")])
    check.validate(poison)
    assert poison["subscription"] is None and poison["origin"] is None
    job = Job("job_1_deadbeef", "crm", 1764324000000, 1764327600000, 1764327600000, total=3)
    validator({"$ref": "#/components/schemas/Job"}).validate(job.view())
    assert Job.from_view(job.view()) == job
