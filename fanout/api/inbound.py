"""Verifying inbound webhooks, per source scheme (``api.ingest.<source>.scheme``).

=====================  ==========================================  ==========  =======================
scheme                 signature                                   timestamp   delivery id
=====================  ==========================================  ==========  =======================
``standard-webhooks``  ``webhook-signature: v1,<b64 HMAC>`` over   yes         ``webhook-id``
                       ``id.timestamp.body``, ``whsec_`` secrets
``github``             ``X-Hub-Signature-256: sha256=<hex HMAC>``  no          ``X-GitHub-Delivery``
                       over the body
``stripe``             ``Stripe-Signature: t=..,v1=<hex HMAC>``    yes (``t``)  the event's ``id``
                       over ``t.body``
``token``              a shared token in ``token_header``          no          ``Idempotency-Key``
                       (``Bearer <token>`` or the bare token)
=====================  ==========================================  ==========  =======================

Every comparison is constant-time; a stale timestamp (outside ``tolerance``) fails like a bad
signature. ``verify`` returns the delivery id (or None) and raises ``Unverified`` with the reason.

``standard-webhooks`` signatures are computed by the reference library (``standardwebhooks``: the
secret's decoding, the signed content, the HMAC); the timestamp check stays here, because the library
fixes its tolerance at five minutes and ``tolerance`` is configurable. Like the library, it verifies
UTF-8 bodies only. ``fanout listen`` verifies with the same function (``standard_webhook``).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import orjson
from multidict import CIMultiDictProxy
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from fanout.config import IngestSource

Headers = CIMultiDictProxy[str] | Mapping[str, str]


class Unverified(Exception):
    """The request is not from the source (or too old)."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _fresh(timestamp: str, tolerance: float) -> None:
    if not timestamp.isascii() or not timestamp.isdigit():
        raise Unverified("the timestamp is missing or malformed")
    if abs(time.time() - int(timestamp)) > tolerance:
        raise Unverified("the timestamp is outside the tolerance (a stale or replayed request)")


def standard_webhook(secrets: Iterable[str], headers: Headers, body: bytes, tolerance: float) -> str:
    """The ``webhook-id`` of a request that carries a ``v1`` signature by one of the ``whsec_``
    ``secrets`` and a timestamp within ``tolerance`` seconds of now; raises ``Unverified``."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not msg_id or not given:
        raise Unverified("webhook-id and webhook-signature are required")
    _fresh(stamp, tolerance)
    try:
        text, when = body.decode(), datetime.fromtimestamp(int(stamp), UTC)
    except UnicodeDecodeError:
        raise Unverified("the body is not UTF-8 text") from None
    except (OverflowError, OSError, ValueError):
        raise Unverified("the timestamp is out of range") from None
    offered = [part for part in given.split() if part.startswith("v1,")]
    for secret in secrets:
        try:
            expected = Webhook(secret).sign(msg_id, when, text)
        except EmptyWebhookSecretError:
            continue
        if any(hmac.compare_digest(expected, o) for o in offered):
            return msg_id
    raise Unverified("no signature matches")


def _standard(source: IngestSource, headers: Headers, body: bytes) -> str:
    secrets = (secret.get_secret_value() for secret in source.secrets)
    return standard_webhook(secrets, headers, body, source.tolerance)


def _github(source: IngestSource, headers: Headers, body: bytes) -> str | None:
    given = headers.get("X-Hub-Signature-256", "")
    if not given.startswith("sha256="):
        raise Unverified("X-Hub-Signature-256 is missing")
    offered = given.removeprefix("sha256=")
    for secret in source.secrets:
        if hmac.compare_digest(_hmac(secret.get_secret_value().encode(), body).hex(), offered):
            return headers.get("X-GitHub-Delivery") or None
    raise Unverified("the signature does not match")


def _stripe(source: IngestSource, headers: Headers, body: bytes) -> str | None:
    fields: dict[str, list[str]] = {}
    for item in headers.get("Stripe-Signature", "").split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    stamp, offered = (fields.get("t") or [""])[0], fields.get("v1", [])
    if not offered:
        raise Unverified("Stripe-Signature has no v1 signature")
    _fresh(stamp, source.tolerance)
    signed = stamp.encode() + b"." + body
    for secret in source.secrets:
        expected = _hmac(secret.get_secret_value().encode(), signed).hex()
        if any(hmac.compare_digest(expected, o) for o in offered):
            return _body_id(body)
    raise Unverified("no signature matches")


def _token(source: IngestSource, headers: Headers, body: bytes) -> str | None:
    given = headers.get(source.token_header, "")
    scheme, _, rest = given.partition(" ")
    candidate = rest.strip() if scheme.lower() == "bearer" else given.strip()
    if not candidate:
        raise Unverified(f"{source.token_header} is missing")
    for secret in source.secrets:
        if hmac.compare_digest(secret.get_secret_value().encode(), candidate.encode()):
            return headers.get("Idempotency-Key") or None
    raise Unverified("the token does not match")


def _body_id(body: bytes) -> str | None:
    try:
        value = orjson.loads(body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


SCHEMES = {"standard-webhooks": _standard, "github": _github, "stripe": _stripe, "token": _token}


def verify(source: IngestSource, headers: Headers, body: bytes) -> str | None:
    """The delivery id of a verified request (None if the scheme has none); raise Unverified."""
    try:
        return SCHEMES[source.scheme](source, headers, body)
    except (binascii.Error, ValueError, UnicodeError):
        raise Unverified("the signature header is malformed") from None


def event_id(source_name: str, delivery_id: str) -> str:
    """The same delivery id always gives the same event id (and so the same webhook-id downstream)."""
    digest = hashlib.blake2b(f"ingest\x00{source_name}\x00{delivery_id}".encode(), digest_size=12)
    return f"evt_{digest.hexdigest()}"
