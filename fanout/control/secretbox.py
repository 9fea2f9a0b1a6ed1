"""Secrets at rest: AES-GCM under a key ring from ``secrets.keys``.

The first key encrypts; every key decrypts, so a key rotation is: put the new key first, keep the old
one after it, rewrite (``fanout subscriptions reencrypt``), then drop the old key. A sealed value is
text, so it can stand where the plaintext stood in a JSON document::

    enc:v1:<key id>:<base64url(12-byte nonce | ciphertext | tag)>

The key id is the first 8 hex digits of SHA-256(key): it names the key without revealing it. The
associated data binds a value to its context (the subscription id), so a sealed secret copied into
another subscription does not decrypt. Values without the ``enc:v1:`` prefix are plaintext (written
before a key was configured) and are read as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fanout.model.errors import FanoutError

PREFIX = "enc:v1:"
NONCE_BYTES = 12


class SecretUnreadable(FanoutError):
    """A sealed value that no configured key opens (wrong key ring, or tampered data)."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_key(size: int = 32) -> str:
    """A fresh AES key, base64-encoded, for ``secrets.keys``."""
    return base64.b64encode(os.urandom(size)).decode()


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


class SecretBox:
    """Seals and opens secret strings. Without keys, ``seal`` returns the plaintext (``enabled`` is False)."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._keys = [(key_id(k), AESGCM(k)) for k in keys]
        self._by_id = dict(self._keys)

    @classmethod
    def from_base64(cls, keys: Iterable[str]) -> SecretBox:
        return cls(base64.b64decode(k) for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def seal(self, plaintext: str, context: str) -> str:
        if not self._keys or is_sealed(plaintext):
            return plaintext
        kid, aead = self._keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        if not is_sealed(value):
            return value
        kid, _, blob = value[len(PREFIX) :].partition(":")
        aead = self._by_id.get(kid)
        if aead is None:
            raise SecretUnreadable(f"sealed with key {kid}, which is not in secrets.keys")
        try:
            raw = base64.urlsafe_b64decode(blob)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretUnreadable(f"a value sealed with key {kid} does not decrypt (tampered?)") from None
