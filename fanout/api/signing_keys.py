"""A subscription's signing keys through the API: which keys a create generates, ``rotate-secret`` (HMAC
secrets, Ed25519 keys or both) and ``GET /v1/subscriptions/{id}/public-key``.

``signing`` names the kinds of key: ``hmac`` (``whsec_`` secrets, ``v1`` signatures), ``ed25519``
(``whsk_`` keys, ``v1a`` signatures) or ``both``. A create generates the kinds ``signing`` asks for
(query parameter; by default ``hmac``, or ``ed25519`` when the body gives Ed25519 keys and no secrets)
that the body does not give. A generated HMAC secret is returned once, in that answer (the receiver
needs it). A generated Ed25519 private key is never returned: fanout signs, and the receiver needs only
the ``whpk_`` public key, which every view of the subscription shows and ``/public-key`` serves
(current keys and, during a rotation's grace period, the previous ones). Private keys are sealed at rest
like HMAC secrets (``fanout.control.secretbox``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fanout.api.context import api
from fanout.api.key_material import public_keys
from fanout.api.problems import Problem, not_found
from fanout.api.subscriptions import changed, etag
from fanout.api.validation import BODY
from fanout.control.plans import rotated, rotated_ed25519
from fanout.http.signing import new_ed25519_key, new_secret
from fanout.model.errors import ValidationFailed
from fanout.model.subscription import Subscription

routes = web.RouteTableDef()


@routes.get("/v1/subscriptions/{id}/public-key")
async def public_key(request: web.Request) -> web.Response:
    sub_id = request.match_info["id"]
    sub = api(request).live.get(sub_id)
    if sub is None:
        raise not_found(f"subscription {sub_id!r}")
    keys = public_keys(sub, datetime.now(UTC))
    if not keys:
        raise not_found(f"an Ed25519 key of subscription {sub_id!r} (it signs with HMAC secrets only)")
    return web.json_response(
        {"id": sub.id, "version": sub.version, "keys": keys}, headers={"ETag": etag(sub)}
    )


@routes.post("/v1/subscriptions/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    app = api(request)
    body = request[BODY] or {}
    grace = float(body.get("grace_seconds", app.settings.api.secret_grace))
    signing = body.get("signing", "hmac")
    secret = new_secret() if signing in ("hmac", "both") else None
    key = new_ed25519_key() if signing in ("ed25519", "both") else None

    def rotate(existing: Subscription) -> Subscription:
        try:
            sub = rotated(existing, secret, grace) if secret is not None else existing
            return rotated_ed25519(sub, key[0], grace) if key is not None else sub
        except ValidationFailed as exc:
            raise Problem(400, str(exc)) from None

    sub = await changed(request, rotate)
    view = sub.public()
    answer: dict[str, Any] = {"id": sub.id, "version": sub.version}
    if secret is not None:
        answer |= {"secret": secret, "previous_secrets_expire_at": view["previous_secrets_expire_at"]}
    if key is not None:
        answer |= {
            "ed25519_public_key": key[1],
            "previous_ed25519_keys_expire_at": view["previous_ed25519_keys_expire_at"],
        }
    return web.json_response(answer, headers={"ETag": etag(sub)})
