"""The signing keys fanout generates for a subscription: which ones a create makes (``signing``:
``hmac``, ``ed25519`` or ``both``) and the ``whpk_`` public keys that verify its ``v1a`` signatures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fanout.http.signing import new_ed25519_key, new_secret
from fanout.model.subscription import Subscription, ed25519_public_key

SIGNING = ("hmac", "ed25519", "both")


def default_signing(body: dict[str, Any]) -> str:
    return "ed25519" if "ed25519_keys" in body and "secrets" not in body else "hmac"


def generate_keys(body: dict[str, Any], signing: str) -> dict[str, str]:
    """Add to ``body`` the keys ``signing`` asks for and it lacks; what the answer shows of them."""
    shown: dict[str, str] = {}
    if signing in ("hmac", "both") and "secrets" not in body:
        shown["secret"] = new_secret()
        body["secrets"] = [shown["secret"]]
    if signing in ("ed25519", "both") and "ed25519_keys" not in body:
        private, shown["ed25519_public_key"] = new_ed25519_key()
        body["ed25519_keys"] = [private]
    return shown


def public_keys(sub: Subscription, now: datetime) -> list[dict[str, Any]]:
    """The ``whpk_`` keys that verify ``sub``'s ``v1a`` signatures now, current ones first."""
    keys: list[dict[str, Any]] = [
        {"public_key": ed25519_public_key(k), "expires_at": None} for k in sub.ed25519_keys
    ]
    keys += [
        {"public_key": ed25519_public_key(p.key), "expires_at": p.expires_at.isoformat()}
        for p in sub.previous_ed25519_keys
        if p.expires_at > now
    ]
    return keys
