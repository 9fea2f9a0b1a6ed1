"""The subscriptions routes against the real broker: create (a generated secret shown once), list and
get (no secrets, ETag), PUT/PATCH/DELETE with If-Match (412 when stale), 409, 404, 400 (schema, model,
SSRF), enable/disable, rotate-secret, test; secrets encrypted in the topic."""

from __future__ import annotations

import orjson
from aiohttp import web

from fanout.control.subscriptions import read_to_end
from tests.integration.api import READ_KEY, api_settings, create_api_topics, running_api, source_topic
from tests.integration.engine import read_topic
from tests.receivers import Receiver


async def test_subscription_lifecycle(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=204 if n == 0 else 503)

    async with Receiver(answer) as receiver, running_api(settings) as api:
        url = receiver.url + "/hooks"
        new = {
            "id": "crm",
            "url": url,
            "topics": [topic],
            "events": ["user.*"],
            "headers": {"X-Team": "crm-token-value"},
            "auth": {"type": "basic", "username": "fanout", "password": "basic-pass-value"},
        }
        status, headers, created = await api.call("POST", "/v1/subscriptions", new)
        assert status == 201, created
        secret = created["secret"]
        assert secret.startswith("whsec_") and headers["ETag"] == '"1"'
        assert headers["Location"] == "/v1/subscriptions/crm"
        assert created["auth"]["password"] == "[redacted]" and created["headers"]["X-Team"] == "[redacted]"

        status, headers, got = await api.call("GET", "/v1/subscriptions/crm", key=READ_KEY)
        assert status == 200 and headers["ETag"] == '"1"' and "secret" not in got
        status, _, listed = await api.call("GET", "/v1/subscriptions")
        assert [s["id"] for s in listed["items"]] == ["crm"]
        text = orjson.dumps(listed).decode() + orjson.dumps(got).decode()
        for secret_value in (secret, "crm-token-value", "basic-pass-value"):
            assert secret_value not in text

        assert (await api.call("POST", "/v1/subscriptions", new))[0] == 409
        assert (await api.call("GET", "/v1/subscriptions/nope"))[0] == 404
        assert (await api.call("POST", "/v1/subscriptions", new, key=READ_KEY))[0] == 403
        bad = [
            {**new, "id": "x1", "url": "ftp://example.com/"},  # schema
            {**new, "id": "x2", "extra": 1},  # additionalProperties
            {**new, "id": "x3", "url": "https://10.0.0.7/hook"},  # SSRF guard
            {**new, "id": "x4", "secrets": ["whsec_" + "A" * 32]},  # 24 zero bytes: fine; next is not
            {**new, "id": "x5", "retry": {"retryable_statuses": [410]}},
            {
                **new,
                "id": "x6",
                "auth": {
                    "type": "oauth2",
                    "token_url": "https://169.254.169.254/t",
                    "client_id": "c",
                    "client_secret": "s",
                },
            },
        ]
        statuses = [(await api.call("POST", "/v1/subscriptions", b))[0] for b in bad]
        assert statuses == [400, 400, 400, 201, 400, 400]
        assert (await api.call("DELETE", "/v1/subscriptions/x4"))[0] == 204

        # replace, with and without the right version
        replacement = {k: v for k, v in new.items() if k != "id"} | {"events": ["user.created"]}
        status, _, problem = await api.call(
            "PUT", "/v1/subscriptions/crm", replacement, headers={"If-Match": '"7"'}
        )
        assert status == 412 and "stale" in problem["detail"]
        status, headers, replaced = await api.call(
            "PUT", "/v1/subscriptions/crm", replacement, headers={"If-Match": '"1"'}
        )
        assert status == 200 and replaced["version"] == 2 and headers["ETag"] == '"2"'
        assert replaced["events"] == ["user.created"] and replaced["secret_count"] == 1, "secrets kept"
        assert (await api.call("PUT", "/v1/subscriptions/crm", {**replacement, "id": "other"}))[0] == 400
        assert (await api.call("PUT", "/v1/subscriptions/none", replacement))[0] == 404

        # merge patch
        status, _, patched = await api.call(
            "PATCH",
            "/v1/subscriptions/crm",
            data=orjson.dumps({"rate_limit": {"per_second": 5}, "headers": None, "description": "CRM"}),
            headers={"Content-Type": "application/merge-patch+json", "If-Match": 'W/"2"'},
        )
        assert status == 200, patched
        assert patched["rate_limit"] == {"per_second": 5.0, "burst": 1} and patched["headers"] == {}
        assert patched["description"] == "CRM" and patched["events"] == ["user.created"]
        assert (await api.call("PATCH", "/v1/subscriptions/crm", {"topics": None}))[0] == 400
        assert (await api.call("PATCH", "/v1/subscriptions/crm", {"bogus": 1}))[0] == 400
        assert (await api.call("PATCH", "/v1/subscriptions/crm", {"url": "nope"}))[0] == 400
        assert (
            await api.call(
                "PATCH", "/v1/subscriptions/crm", {"max_in_flight": 2}, headers={"If-Match": '"2"'}
            )
        )[0] == 412

        # disable / enable
        status, _, off = await api.call("POST", "/v1/subscriptions/crm/disable", {"reason": "maintenance"})
        assert status == 200 and off["enabled"] is False and off["disabled_reason"] == "maintenance"
        status, _, on = await api.call(
            "POST", "/v1/subscriptions/crm/enable", headers={"If-Match": f'"{off["version"]}"'}
        )
        assert status == 200 and on["enabled"] is True and on["disabled_reason"] is None
        assert (await api.call("POST", "/v1/subscriptions/crm/enable", headers={"If-Match": '"1"'}))[0] == 412

        # rotate: the new secret once, the old one kept for the grace period
        status, headers, rotated = await api.call(
            "POST", "/v1/subscriptions/crm/rotate-secret", {"grace_seconds": 600}
        )
        assert (
            status == 200 and rotated["secret"] != secret and len(rotated["previous_secrets_expire_at"]) == 1
        )
        assert headers["ETag"] == f'"{rotated["version"]}"'
        stored = read_to_end(settings)["crm"]
        assert stored.secrets == [rotated["secret"]] and stored.previous_secrets[0].secret == secret

        # test: the endpoint's answer, whatever it is
        status, _, ok = await api.call("POST", "/v1/subscriptions/crm/test")
        assert status == 200 and ok["ok"] is True and ok["status"] == 204 and ok["error"] is None
        assert ok["latency_ms"] >= 0
        status, _, failed = await api.call("POST", "/v1/subscriptions/crm/test")
        assert status == 200 and failed == {**failed, "ok": False, "status": 503, "error": "HTTP 503"}
        request = receiver.requests[0]
        assert request.path == "/hooks" and request.headers["Authorization"].startswith("Basic ")
        assert len(request.headers["webhook-signature"].split()) == 2, (
            "signed with the new and the old secret"
        )
        assert orjson.loads(request.body)["type"] == "fanout.test"
        assert (await api.call("POST", "/v1/subscriptions/nope/test"))[0] == 404

        assert (await api.call("DELETE", "/v1/subscriptions/crm", headers={"If-Match": '"1"'}))[0] == 412
        assert (await api.call("DELETE", "/v1/subscriptions/crm"))[0] == 204
        assert (await api.call("DELETE", "/v1/subscriptions/crm"))[0] == 404
        assert (await api.call("GET", "/v1/subscriptions/crm"))[0] == 404

    # at rest, in the subscriptions topic: no secret in clear, ever
    raw = b"".join(m.value() or b"" for m in read_topic(settings, settings.topics.subscriptions, 1))
    assert b"enc:v1:" in raw
    for secret_value in (secret, rotated["secret"], "crm-token-value", "basic-pass-value"):
        assert secret_value.encode() not in raw


async def test_expressions_and_ed25519_keys_through_the_api(bootstrap: str, unique: str) -> None:
    """A CEL compile error is a 400 naming the subscription, the field and the position; an Ed25519 key is
    accepted, never shown, and its public key is."""
    from fanout.http.signing import new_ed25519_key

    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    private, public = new_ed25519_key()
    async with running_api(settings) as api:
        base = {"url": "https://hooks.example.com/in", "topics": [topic]}
        status, _, problem = await api.call(
            "POST", "/v1/subscriptions", {**base, "id": "bad", "filter_expr": "data.amount >"}
        )
        assert status == 400, problem
        assert "bad.filter_expr: line 1, column 14" in problem["detail"]
        status, _, problem = await api.call(
            "POST", "/v1/subscriptions", {**base, "id": "bad2", "transform": '{"a": dta}'}
        )
        assert status == 400 and "bad2.transform: line 1, column" in problem["detail"], problem
        good = {
            **base,
            "id": "partner",
            "filter_expr": "data.amount > 1000",
            "transform": '{"payload": data}',
            "ed25519_keys": [private],
        }
        status, _, created = await api.call("POST", "/v1/subscriptions", good)
        assert status == 201, created
        assert created["filter_expr"] == "data.amount > 1000" and created["transform"] == '{"payload": data}'
        assert created["ed25519_public_keys"] == [public]
        status, _, got = await api.call("GET", "/v1/subscriptions/partner", key=READ_KEY)
        assert status == 200 and private not in orjson.dumps(got).decode()
        assert got["ed25519_public_keys"] == [public]
