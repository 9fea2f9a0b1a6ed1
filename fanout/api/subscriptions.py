"""``/v1/subscriptions``: list, create, get, replace, patch, delete, enable, disable, test (rotate-secret and
public-key: ``fanout.api.signing_keys``).

Reads come from this instance's live view of the subscriptions topic and carry the version as an
``ETag``. Writes are compare-and-set transactions (``fanout.control.plans``): ``If-Match`` gives
the expected version, and a stale one is a 412; a write answers after it was read back. Every body was
validated against ``schemas/subscription.schema.json`` first; then the subscription model validates it,
and the endpoint URLs (and an OAuth token URL) pass the SSRF rules. A client certificate is inline PEM
here: file paths (``cert_file``, ``key_file``) are for routes files an operator applies, and a write
through the API may only keep the ones the subscription already has. Secrets are never returned,
except an HMAC secret fanout generated (create without secrets, rotate-secret), once, in that answer;
Ed25519 private keys never (``fanout.api.signing_keys``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from aiohttp.resolver import ThreadedResolver

from fanout.api.auth import PRINCIPAL
from fanout.api.context import Api, api
from fanout.api.key_material import default_signing, generate_keys
from fanout.api.openapi import file_validator
from fanout.api.problems import Problem, not_found
from fanout.api.validation import BODY, PARAMS, field_errors
from fanout.control.plans import (
    Change,
    Plan,
    delete_plan,
    disabled,
    enabled,
    put_plan,
    update_plan,
)
from fanout.http.ssrf import url_refusal
from fanout.model.cert_paths import named_files
from fanout.model.endpoint_auth import OAuth2ClientCredentials
from fanout.model.errors import DeliveryError, FanoutError, ValidationFailed, VersionConflict
from fanout.model.event import Delivery, Event
from fanout.model.subscription import Subscription, parse_subscription

routes = web.RouteTableDef()
SUBSCRIPTION_SCHEMA = file_validator("subscription.schema.json")
KEPT_ON_WRITE = ("version", "disabled_reason", "previous_secrets", "previous_ed25519_keys")


def etag(sub: Subscription) -> str:
    return f'"{sub.version}"'


def expected_version(request: web.Request) -> int | None:
    value = request[PARAMS].get("If-Match")
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/")
    if len(tag) >= 3 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
        return int(tag[1:-1])
    raise Problem(412, "If-Match does not name a version of this subscription")


def shown(sub: Subscription, status: int = 200, **extra: Any) -> web.Response:
    return web.json_response({**sub.public(), **extra}, status=status, headers={"ETag": etag(sub)})


def parse(data: dict[str, Any], sub_id: str) -> Subscription:
    try:
        return parse_subscription(data, default_id=sub_id)
    except ValidationFailed as exc:
        raise Problem(400, str(exc), errors=[{"field": exc.where, "message": exc.message}]) from None


INLINE_ONLY = "the API takes inline PEM only (cert_pem, key_pem); certificate files are for routes files"


def checked_certificate(sub: Subscription, existing: Subscription | None = None) -> Subscription:
    """``sub``, unless its client certificate names a file other than the one ``existing`` has (400)."""
    fields = named_files(sub.client_certificate, existing.client_certificate if existing else None)
    if fields:
        where = f"client_certificate/{fields[0]}"
        errors = [{"field": f"body/{where}", "message": INLINE_ONLY}]
        raise Problem(400, f"{sub.id}.{where}: {INLINE_ONLY}", errors=errors)
    return sub


def writable(sub: Subscription) -> dict[str, Any]:
    """The subscription as a write body (what PATCH merges into)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if v is not None}
        return node

    document = {k: v for k, v in sub.document().items() if k not in KEPT_ON_WRITE}
    return dict(clean(document))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def carry_over(data: dict[str, Any], existing: Subscription, given: dict[str, Any]) -> dict[str, Any]:
    """What a replacement keeps: the secrets and Ed25519 keys (and a rotation's previous ones) unless new
    ones are given; the enabled state unless given."""
    data = dict(data)
    if "secrets" not in given:
        data["secrets"] = existing.secrets
        data["previous_secrets"] = [p.model_dump(mode="json") for p in existing.previous_secrets]
    if "ed25519_keys" not in given:
        data["ed25519_keys"] = existing.ed25519_keys
        data["previous_ed25519_keys"] = [p.model_dump(mode="json") for p in existing.previous_ed25519_keys]
    if "enabled" not in given:
        data["enabled"], data["disabled_reason"] = existing.enabled, existing.disabled_reason
    return data


async def check_urls(app: Api, sub: Subscription) -> None:
    resolver = ThreadedResolver() if app.settings.api.resolve_urls else None
    urls = [("url", sub.url)]
    if isinstance(sub.auth, OAuth2ClientCredentials):
        urls.append(("auth/token_url", sub.auth.token_url))
    for field, url in urls:
        reason = await url_refusal(url, app.sender.policy, app.settings.delivery.allow_http, resolver)
        if reason is not None:
            raise Problem(
                400, f"{sub.id}.{field}: {reason}", errors=[{"field": f"body/{field}", "message": reason}]
            )


async def run(app: Api, plan: Plan) -> list[Change]:
    try:
        return await app.live.transact(plan)
    except VersionConflict as exc:
        if exc.expected is None:
            raise Problem(409, f"subscription {exc.key!r} exists already (version {exc.current})") from None
        raise Problem(412, f"version {exc.expected} is stale: the current version is {exc.current}") from None
    except KeyError as exc:
        raise not_found(f"subscription {exc.args[0]!r}") from None
    except FanoutError as exc:
        raise Problem(503, f"the subscriptions topic could not be written: {exc}") from None


def _written(changes: list[Change]) -> Subscription:
    sub = changes[0].sub
    assert sub is not None
    return sub


def _sub_id(request: web.Request) -> str:
    return request.match_info["id"]


@routes.get("/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    return web.json_response({"items": [s.public() for s in api(request).live.all()]})


@routes.post("/v1/subscriptions")
async def create(request: web.Request) -> web.Response:
    app = api(request)
    body = dict(request[BODY])
    extra = generate_keys(body, request[PARAMS].get("signing") or default_signing(body))
    sub = checked_certificate(parse(body, body["id"]))
    await check_urls(app, sub)
    created = _written(await run(app, put_plan(sub, create=True)))
    response = shown(created, 201, **extra)
    response.headers["Location"] = f"/v1/subscriptions/{created.id}"
    return response


@routes.get("/v1/subscriptions/{id}")
async def get(request: web.Request) -> web.Response:
    sub = api(request).live.get(_sub_id(request))
    if sub is None:
        raise not_found(f"subscription {_sub_id(request)!r}")
    return shown(sub)


async def _replace(request: web.Request, app: Api, sub_id: str, build: Any) -> web.Response:
    """Validate the candidate (with the live version), check its URLs, then write it compare-and-set."""
    existing = app.live.get(sub_id)
    if existing is None:
        raise not_found(f"subscription {sub_id!r}")
    await check_urls(app, build(existing))
    changes = await run(app, update_plan(sub_id, build, expected_version(request)))
    return shown(_written(changes))


@routes.put("/v1/subscriptions/{id}")
async def replace(request: web.Request) -> web.Response:
    app, sub_id, body = api(request), _sub_id(request), request[BODY]
    if body.get("id", sub_id) != sub_id:
        raise Problem(400, "the id in the body differs from the one in the path")

    def build(existing: Subscription) -> Subscription:
        return checked_certificate(
            parse(carry_over({**body, "id": sub_id}, existing, body), sub_id), existing
        )

    return await _replace(request, app, sub_id, build)


@routes.patch("/v1/subscriptions/{id}")
async def patch(request: web.Request) -> web.Response:
    app, sub_id, body = api(request), _sub_id(request), request[BODY]
    if body.get("id", sub_id) != sub_id:
        raise Problem(400, "the id of a subscription cannot change")

    def build(existing: Subscription) -> Subscription:
        merged = merge_patch(writable(existing), body)
        errors = field_errors(SUBSCRIPTION_SCHEMA, merged, "body")
        if errors:
            raise Problem(400, "the patched subscription is invalid", slug="invalid-body", errors=errors)
        return checked_certificate(parse(carry_over(merged, existing, body), sub_id), existing)

    return await _replace(request, app, sub_id, build)


@routes.delete("/v1/subscriptions/{id}")
async def delete(request: web.Request) -> web.Response:
    app, sub_id = api(request), _sub_id(request)
    if not await run(app, delete_plan(sub_id, expected_version(request))):
        raise not_found(f"subscription {sub_id!r}")
    return web.Response(status=204)


async def changed(request: web.Request, change: Any) -> Subscription:
    """The subscription of the request's path after ``change`` (compare-and-set, with ``If-Match``)."""
    app, sub_id = api(request), _sub_id(request)
    if app.live.get(sub_id) is None:
        raise not_found(f"subscription {sub_id!r}")
    return _written(await run(app, update_plan(sub_id, change, expected_version(request))))


async def _update(request: web.Request, change: Any) -> web.Response:
    return shown(await changed(request, change))


@routes.post("/v1/subscriptions/{id}/enable")
async def enable(request: web.Request) -> web.Response:
    return await _update(request, enabled)


@routes.post("/v1/subscriptions/{id}/disable")
async def disable(request: web.Request) -> web.Response:
    body = request[BODY] or {}
    reason = body.get("reason") or f"disabled by {request[PRINCIPAL].name}"
    return await _update(request, lambda s: disabled(s, reason))


class _NoTicket:
    fenced = False

    def add(self, n: int) -> None:
        return None

    def release(self) -> None:
        return None


@routes.post("/v1/subscriptions/{id}/test")
async def test(request: web.Request) -> web.Response:
    app, sub_id = api(request), _sub_id(request)
    sub = app.live.get(sub_id)
    if sub is None:
        raise not_found(f"subscription {sub_id!r}")
    now = time.time()
    data = {"subscription": sub.id, "message": "a test event from fanout"}
    value = orjson.dumps({"event": "fanout.test", "data": data})
    event = Event(
        id=f"test_{uuid.uuid4().hex}", type="fanout.test", topic=sub.topics[0], partition=0, offset=0,
        key=None, time=now, value=value, headers=[], attributes={}, data=data, data_parsed=True,
    )  # fmt: skip
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        status, _ = await app.sender.attempt(
            Delivery(event, sub, 0, now, _NoTicket()), max_seconds=app.settings.api.test_timeout
        )
    except DeliveryError as exc:
        status, error = exc.status, exc.error
    ok = status is not None and 200 <= status < 300 and error is None
    if error is None and not ok:
        error = f"HTTP {status}"
    latency = round((time.monotonic() - started) * 1000, 3)
    return web.json_response({"ok": ok, "status": status, "latency_ms": latency, "error": error})
