"""``Idempotency-Key`` for ``POST /v1/events``: a repeated request keeps its event ids; the same key with
a different request is a conflict.

A request's fingerprint is a digest of what it publishes (topic, record key, body as canonical JSON). The
ids fanout assigns are derived from (caller, topic, key, index in the batch, fingerprint), so they
depend on the body: a different body under the same key can never get the ids of the first one, on any
replica, before or after a restart. On top of that each API replica remembers, in memory, the
fingerprint each (caller, key) was first used with, for ``window`` seconds and at most ``max_keys``
keys (the oldest are forgotten first): a different request under a remembered key is answered 409
and nothing is published. A key first used on another replica, or forgotten, is not detected: that
request is published with ids of its own.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson


def fingerprint(topic: str, key: str | None, body: Any) -> bytes:
    """What a request publishes, as a digest: equal JSON values give equal digests (keys sorted)."""
    canonical = orjson.dumps([topic, key, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).digest()


def idempotent_id(principal: str, topic: str, key: str, index: int, digest: bytes) -> str:
    parts = f"{principal}\x00{topic}\x00{key}\x00{index}\x00".encode() + digest
    return f"evt_{hashlib.blake2b(parts, digest_size=12).hexdigest()}"


class IdempotencyKeys:
    """The fingerprint each (principal, key) was first used with, bounded in time and count."""

    def __init__(
        self, window: float = 24 * 3600, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()

    def claim(self, principal: str, key: str, digest: bytes) -> bool:
        """True when ``key`` is new (it is remembered from now on) or was used with ``digest``; False when
        it was used with another request within the window."""
        now = self._clock()
        seen = self._seen
        while seen and next(iter(seen.values()))[1] <= now:
            seen.popitem(last=False)
        entry = seen.get((principal, key))
        if entry is not None:
            return entry[0] == digest
        while len(seen) >= self.max_keys:
            seen.popitem(last=False)
        seen[(principal, key)] = (digest, now + self.window)
        return True

    def __len__(self) -> int:
        return len(self._seen)
