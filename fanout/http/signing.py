"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, space-separated.

Signing is per attempt (the timestamp is the send time) with every active key, so a receiver that
rotates its secret verifies with either. ``hmac.digest`` is OpenSSL's one-shot HMAC: no Python-level
object per signature.
"""

from __future__ import annotations

import base64
import hmac
import os

SECRET_PREFIX = "whsec_"


def sign(keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode() for key in keys)


def new_secret(size: int = 32) -> str:
    """A fresh ``whsec_`` secret of ``size`` random bytes (24 to 64)."""
    if not 24 <= size <= 64:
        raise ValueError("secret size must be 24 to 64 bytes")
    return SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode()
