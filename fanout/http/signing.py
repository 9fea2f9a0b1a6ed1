"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, space-separated.

Signing is per attempt (the timestamp is the send time) with every active key, so a receiver that
rotates its secret verifies with either. Signatures are never cached; ``Signer`` makes each one cheap
instead, by keeping one keyed HMAC state per key and copying it (the key schedule is not redone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"


def sign(keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode() for key in keys)


class Signer:
    """``sign`` with a keyed HMAC-SHA256 state per key, reused across signatures."""

    def __init__(self) -> None:
        self._keyed: dict[bytes, hmac.HMAC] = {}

    def sign(self, keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
        prefix = f"{msg_id}.{timestamp}.".encode()
        parts = []
        for key in keys:
            keyed = self._keyed.get(key)
            if keyed is None:
                keyed = self._keyed[key] = hmac.new(key, digestmod=hashlib.sha256)
            mac = keyed.copy()
            mac.update(prefix)
            mac.update(body)
            parts.append("v1," + base64.b64encode(mac.digest()).decode())
        return " ".join(parts)


def new_secret(size: int = 32) -> str:
    """A fresh ``whsec_`` secret of ``size`` random bytes (24 to 64)."""
    if not 24 <= size <= 64:
        raise ValueError("secret size must be 24 to 64 bytes")
    return SECRET_PREFIX + base64.b64encode(os.urandom(size)).decode()


def verify(secrets: list[str], headers: Mapping[str, str], body: bytes, tolerance: float = 300.0) -> bool:
    """True if ``webhook-signature`` holds a valid ``v1`` signature by any of ``secrets`` and the
    timestamp is within ``tolerance`` seconds of now. Constant-time comparison."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, given = (
        lowered.get("webhook-id"),
        lowered.get("webhook-timestamp"),
        lowered.get("webhook-signature"),
    )
    if not (msg_id and stamp and given and stamp.isascii() and stamp.isdigit()):
        return False
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    keys = tuple(base64.b64decode(s.removeprefix(SECRET_PREFIX)) for s in secrets)
    expected = [part.removeprefix("v1,") for part in sign(keys, msg_id, int(stamp), body).split(" ")]
    offered = [part[3:] for part in given.split(" ") if part.startswith("v1,")]
    return any(hmac.compare_digest(e, o) for e in expected for o in offered)
