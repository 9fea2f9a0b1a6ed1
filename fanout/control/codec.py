"""Records of the subscriptions topic: a subscription as JSON with every secret field sealed.

``encode`` seals each secret value (``subscription.map_secrets``) with the first key of
``secrets.keys``; ``decode`` opens them with any configured key, so readers (the dispatcher's table
watcher, the API, the CLI) get plaintext subscriptions. Without keys, secrets are written as they are
and a warning says so once per process. A record that cannot be decoded (bad JSON, invalid, or sealed
with a key that is not configured) is skipped with an error in the log, as before.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from fanout.config import SecretsSettings
from fanout.control.secretbox import SecretBox, SecretUnreadable
from fanout.model.errors import ValidationFailed
from fanout.model.subscription import Subscription, map_secrets, parse_subscription

log = logging.getLogger("fanout.subscriptions")

Decoded = tuple[str, Subscription | None]
_warned = False


def context(sub_id: str) -> str:
    """The associated data of a subscription's sealed values: they only open for that subscription."""
    return f"fanout.subscription:{sub_id}"


# Fields added after the first release, left out while at their defaults: a record that does not use
# them stays readable by a dispatcher of the previous version (its model forbids unknown fields).
_NEWER_FIELDS: dict[str, Any] = {
    "previous_secrets": [],
    "auth": None,
    "filter_expr": None,
    "transform": None,
    "ed25519_keys": [],
    "previous_ed25519_keys": [],
}
_NEWER_CERTIFICATE_FIELDS = ("cert_pem", "key_pem")


def _compatible(document: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in document.items() if k not in _NEWER_FIELDS or v != _NEWER_FIELDS[k]}
    cert = doc.get("client_certificate")
    if isinstance(cert, dict):
        doc["client_certificate"] = {
            k: v for k, v in cert.items() if k not in _NEWER_CERTIFICATE_FIELDS or v is not None
        }
    return doc


class SubscriptionCodec:
    def __init__(self, secrets: SecretsSettings) -> None:
        self.box = SecretBox.from_base64(k.get_secret_value() for k in secrets.keys)

    def encode(self, sub: Subscription) -> bytes:
        global _warned
        if not self.box.enabled and not _warned:
            _warned = True
            log.warning(
                "secrets.keys is not set: subscription secrets are written to the subscriptions topic "
                "unencrypted; set FANOUT_SECRETS__KEYS (fanout keys encryption makes a key)"
            )
        where = context(sub.id)
        return orjson.dumps(
            map_secrets(_compatible(sub.document()), lambda value: self.box.seal(value, where))
        )

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None:
        """(id, subscription) or (id, None) for a tombstone; None for a record that must be skipped."""
        sub_id = (key or b"").decode("utf-8", "replace")
        if value is None:
            return sub_id, None
        try:
            document = orjson.loads(value)
            if not isinstance(document, dict):
                raise ValidationFailed(sub_id, "not a JSON object")
            where = context(str(document.get("id", sub_id)))
            opened = map_secrets(document, lambda text: self.box.open(text, where))
            return sub_id, parse_subscription(opened, default_id=sub_id)
        except (orjson.JSONDecodeError, ValidationFailed, SecretUnreadable) as exc:
            log.error("ignoring an unreadable record for subscription %s: %s", sub_id, exc)
            return None
