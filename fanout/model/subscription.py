"""Subscriptions: who gets which events, how fast, and how failures are retried.

A subscription is validated when it enters fanout (a routes file, the subscriptions topic, the API);
``parse_subscription`` turns a pydantic error into ``ValidationFailed`` naming the subscription and the
field, e.g. ``orders-hook.rate_limit.per_second: must be greater than 0``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fanout.model.endpoint_auth import EndpointAuth
from fanout.model.errors import ValidationFailed
from fanout.model.expressions.compile import (
    MAX_EXPRESSION_LENGTH,
    CompileError,
    Kind,
    Program,
    compile_expression,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
EVENT_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*(\.\*)?)$")
SECRET_PREFIX = "whsec_"
ED25519_SECRET_PREFIX = "whsk_"
ED25519_PUBLIC_PREFIX = "whpk_"
REDACTED = "[redacted]"
# Characters RFC 9110 forbids in a field value (aiohttp refuses to send them).
HEADER_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
FORBIDDEN_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "host", "transfer-encoding"}
)


CACHED = (
    "signing_keys",
    "previous_keys",
    "ed25519_signing_keys",
    "previous_ed25519_keys_parsed",
    "origin",
    "filter_program",
    "transform_program",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """A token bucket: ``per_second`` sustained (group-wide), ``burst`` tokens at most."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(default=1, ge=1, le=1_000_000)


class RetryPolicy(_Strict):
    """Overrides of the global retry defaults (``schedule`` and ``max_age`` in seconds)."""

    schedule: list[float] | None = Field(default=None, min_length=1, max_length=100)
    max_age: float | None = Field(default=None, gt=0, le=365 * 86400)
    retryable_statuses: list[int] = Field(default_factory=list, max_length=100)

    @field_validator("schedule")
    @classmethod
    def _delays(cls, schedule: list[float] | None) -> list[float] | None:
        if schedule is not None and any(not 0 <= d <= 30 * 86400 for d in schedule):
            raise ValueError("delays must be non-negative seconds, at most 2592000 (30 days)")
        return schedule

    @field_validator("retryable_statuses")
    @classmethod
    def _statuses(cls, statuses: list[int]) -> list[int]:
        bad = [s for s in statuses if not 400 <= s <= 499 or s == 410]
        if bad:
            raise ValueError(f"only 4xx statuses other than 410 can be made retryable, not {bad}")
        return statuses


class ClientCertificate(_Strict):
    """mTLS: a PEM certificate (chain) and its private key, each as a file path or inline PEM text
    (``key_pem`` is a secret: encrypted at rest, never shown)."""

    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: str | None = Field(default=None, max_length=65536)
    key_pem: str | None = Field(default=None, max_length=65536, repr=False)

    @model_validator(mode="after")
    def _one_of_each(self) -> ClientCertificate:
        if (self.cert_file is None) == (self.cert_pem is None):
            raise ValueError("give exactly one of cert_file and cert_pem")
        if (self.key_file is None) == (self.key_pem is None):
            raise ValueError("give exactly one of key_file and key_pem")
        return self


def _check_secret(secret: str, where: str) -> None:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{where} must start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"{where} is not valid base64 after {SECRET_PREFIX}") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"{where} must encode 24 to 64 bytes, not {len(key)}")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def ed25519_private_key(text: str, where: str = "key") -> Ed25519PrivateKey:
    """A ``whsk_`` key: base64 of the 32-byte Ed25519 seed, or of the 64-byte seed and public key
    (libsodium's form; the public half must match)."""
    if not text.startswith(ED25519_SECRET_PREFIX):
        raise ValueError(f"{where} must start with {ED25519_SECRET_PREFIX}")
    try:
        raw = base64.b64decode(text[len(ED25519_SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"{where} is not valid base64 after {ED25519_SECRET_PREFIX}") from None
    if len(raw) not in (32, 64):
        raise ValueError(
            f"{where} must encode a 32-byte Ed25519 seed (or seed and public key), not {len(raw)}"
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and raw[32:] != key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw):
        raise ValueError(f"{where}: its public half does not belong to its seed")
    return key


def ed25519_public_key(text: str) -> str:
    """The ``whpk_`` public key of a ``whsk_`` key."""
    raw = ed25519_private_key(text).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return ED25519_PUBLIC_PREFIX + base64.b64encode(raw).decode()


class PreviousSecret(_Strict):
    """A secret replaced by a rotation: still signed with until ``expires_at``."""

    secret: str = Field(repr=False)
    expires_at: AwareDatetime

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        _check_secret(secret, "previous secret")
        return secret


class PreviousEd25519Key(_Strict):
    """An Ed25519 key replaced by a rotation: still signed with (``v1a``) until ``expires_at``."""

    key: str = Field(repr=False)
    expires_at: AwareDatetime

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        ed25519_private_key(key, "previous Ed25519 key")
        return key


class Subscription(_Strict):
    """One endpoint and what it receives. ``version`` is bumped by every write to the topic."""

    id: str = Field(pattern=ID_PATTERN)
    version: int = Field(default=0, ge=0)
    url: str = Field(max_length=2048)
    topics: list[str] = Field(min_length=1, max_length=100)
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=100)
    filter: dict[str, str] = Field(default_factory=dict, max_length=32)
    filter_expr: str | None = Field(default=None, max_length=MAX_EXPRESSION_LENGTH)
    transform: str | None = Field(default=None, max_length=MAX_EXPRESSION_LENGTH)
    enabled: bool = True
    disabled_reason: str | None = None
    secrets: list[str] = Field(default_factory=list, max_length=10, repr=False)
    previous_secrets: list[PreviousSecret] = Field(default_factory=list, max_length=10, repr=False)
    ed25519_keys: list[str] = Field(default_factory=list, max_length=10, repr=False)
    previous_ed25519_keys: list[PreviousEd25519Key] = Field(default_factory=list, max_length=10, repr=False)
    auth: EndpointAuth | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    rate_limit: RateLimit | None = None
    max_in_flight: int = Field(default=32, ge=1, le=1024)
    timeout: float = Field(default=15.0, gt=0, le=300)
    retry: RetryPolicy = RetryPolicy()
    payload: Literal["standard", "raw"] = "standard"
    ordering: Literal["none", "key"] = "none"
    client_certificate: ClientCertificate | None = None
    description: str = Field(default="", max_length=1024)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use headers")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            raise ValueError("has an invalid port") from None
        return url

    @field_validator("topics")
    @classmethod
    def _topics(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
                raise ValueError(f"{topic!r} is not a valid Kafka topic name")
        return sorted(set(topics))

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str]) -> list[str]:
        for pattern in events:
            if len(pattern) > 256 or not EVENT_PATTERN.match(pattern):
                raise ValueError(f"{pattern!r} is not an event type, 'prefix.*' or '*'")
        return events

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, secrets: list[str]) -> list[str]:
        for i, secret in enumerate(secrets):
            _check_secret(secret, f"secret {i}")
        return secrets

    @field_validator("filter")
    @classmethod
    def _filter(cls, attributes: dict[str, str]) -> dict[str, str]:
        """Attribute names match case-insensitively: Kafka header names are compared lower-cased."""
        lowered = {name.lower(): value for name, value in attributes.items()}
        if len(lowered) != len(attributes):
            raise ValueError("names an attribute twice (names are case-insensitive)")
        return lowered

    @field_validator("filter_expr", "transform")
    @classmethod
    def _expression(cls, source: str | None, info: ValidationInfo) -> str | None:
        """Compiled now, so that an expression that cannot run is refused where it is written."""
        if source is not None:
            kind: Kind = "filter_expr" if info.field_name == "filter_expr" else "transform"
            try:
                compile_expression(kind, source)
            except CompileError as exc:
                raise ValueError(str(exc)) from None
        return source

    @field_validator("ed25519_keys")
    @classmethod
    def _ed25519_keys(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            ed25519_private_key(key, f"Ed25519 key {i}")
        return keys

    @model_validator(mode="after")
    def _signed(self) -> Subscription:
        if not self.secrets and not self.ed25519_keys:
            raise ValueError(
                "needs a signing secret (secrets, whsec_) or an Ed25519 key (ed25519_keys, whsk_)"
            )
        return self

    @model_validator(mode="after")
    def _transform_body(self) -> Subscription:
        if self.transform is not None and self.payload == "raw":
            raise ValueError("transform makes the body: it cannot be combined with payload 'raw'")
        return self

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(f"{name!r} is set by fanout and cannot be overridden")
            if HEADER_CONTROL_CHARACTERS.search(value):
                raise ValueError(f"header {name!r} contains a line break or another control character")
        return headers

    @cached_property
    def signing_keys(self) -> tuple[bytes, ...]:
        """The keys of the current secrets."""
        return tuple(_key(s) for s in self.secrets)

    @cached_property
    def previous_keys(self) -> tuple[tuple[bytes, float], ...]:
        """(key, expiry in epoch seconds) of each previous secret."""
        return tuple((_key(p.secret), p.expires_at.timestamp()) for p in self.previous_secrets)

    @cached_property
    def ed25519_signing_keys(self) -> tuple[Ed25519PrivateKey, ...]:
        """The current Ed25519 keys (``v1a`` signatures)."""
        return tuple(ed25519_private_key(k) for k in self.ed25519_keys)

    @cached_property
    def previous_ed25519_keys_parsed(self) -> tuple[tuple[Ed25519PrivateKey, float], ...]:
        return tuple(
            (ed25519_private_key(p.key), p.expires_at.timestamp()) for p in self.previous_ed25519_keys
        )

    def ed25519_keys_at(self, now: float) -> tuple[Ed25519PrivateKey, ...]:
        """The Ed25519 keys to sign with at ``now``: current, then previous ones not expired yet."""
        if not self.previous_ed25519_keys:
            return self.ed25519_signing_keys
        return self.ed25519_signing_keys + tuple(
            k for k, expires in self.previous_ed25519_keys_parsed if expires > now
        )

    @property
    def ed25519_public_keys(self) -> list[str]:
        """The ``whpk_`` keys receivers verify with: the current ones, then the previous ones."""
        return [
            ed25519_public_key(k) for k in (*self.ed25519_keys, *(p.key for p in self.previous_ed25519_keys))
        ]

    @cached_property
    def filter_program(self) -> Program | None:
        """``filter_expr`` compiled (shared with every subscription that has the same expression)."""
        return None if self.filter_expr is None else compile_expression("filter_expr", self.filter_expr)

    @cached_property
    def transform_program(self) -> Program | None:
        return None if self.transform is None else compile_expression("transform", self.transform)

    def signing_keys_at(self, now: float) -> tuple[bytes, ...]:
        """The keys to sign with at ``now`` (epoch seconds): the current secrets, then every previous
        secret that has not expired yet (a rotation's grace period)."""
        if not self.previous_secrets:
            return self.signing_keys
        return self.signing_keys + tuple(key for key, expires in self.previous_keys if expires > now)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Subscription:
        """A copy with ``update`` applied (not validated); the keys cached from the secrets are dropped so
        that they are derived again from the copy's secrets."""
        copied = super().model_copy(update=update, deep=deep)
        for name in CACHED:
            copied.__dict__.pop(name, None)
        return copied

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @cached_property
    def origin(self) -> str:
        """``scheme://host:port``: the unit whose concurrent deliveries ``connections_per_host`` limits."""
        parsed = urlsplit(self.url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return f"{parsed.scheme}://{parsed.hostname}:{port}"

    def warm(self) -> None:
        """Derive what deliveries use (signing keys, origin) now, off the event loop (table builds run in
        the subscriptions watcher's thread), rather than on the first delivery."""
        _ = self.signing_keys, self.previous_keys, self.origin, self.filter_program, self.transform_program
        _ = self.ed25519_signing_keys, self.previous_ed25519_keys_parsed

    def public(self) -> dict[str, Any]:
        """The subscription as JSON-able data without its secrets: signing secrets are counted, every
        other secret field (header values, which are often credentials, too) reads ``[redacted]``."""
        data = map_secrets(self.model_dump(mode="json"), lambda _value: REDACTED)
        data["secret_count"] = len(data.pop("secrets"))
        data["previous_secrets_expire_at"] = [p["expires_at"] for p in data.pop("previous_secrets")]
        data.pop("ed25519_keys")
        data["ed25519_public_keys"] = self.ed25519_public_keys
        data["previous_ed25519_keys_expire_at"] = [p["expires_at"] for p in data.pop("previous_ed25519_keys")]
        return data

    def document(self) -> dict[str, Any]:
        """The subscription as stored in the subscriptions topic."""
        return self.model_dump(mode="json", exclude_defaults=False)


def map_secrets(document: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A copy of a subscription document (``document()``, or one read from the topic) with ``change``
    applied to every secret value: signing secrets, Ed25519 keys, previous secrets and keys, header values,
    the secret fields of ``auth`` and an inline client key. The one list of what is secret."""
    doc = dict(document)

    def each(values: Any) -> Any:
        return (
            [change(v) if isinstance(v, str) else v for v in values] if isinstance(values, list) else values
        )

    doc["secrets"] = each(doc.get("secrets"))
    doc["ed25519_keys"] = each(doc.get("ed25519_keys"))
    for name, field in (("previous_secrets", "secret"), ("previous_ed25519_keys", "key")):
        if isinstance(doc.get(name), list):
            doc[name] = [
                {**p, field: change(p[field])} if isinstance(p, dict) and isinstance(p.get(field), str) else p
                for p in doc[name]
            ]
    if isinstance(doc.get("headers"), dict):
        doc["headers"] = {k: change(v) if isinstance(v, str) else v for k, v in doc["headers"].items()}
    for name, fields in (
        ("auth", ("value", "password", "client_secret")),
        ("client_certificate", ("key_pem",)),
    ):
        section = doc.get(name)
        if isinstance(section, dict):
            doc[name] = {
                k: change(v) if k in fields and isinstance(v, str) else v for k, v in section.items()
            }
    secret_lists = ("secrets", "previous_secrets", "ed25519_keys", "previous_ed25519_keys", "headers")
    for key in [k for k in secret_lists if doc.get(k) is None]:
        doc.pop(key, None)
    return doc


def _where(sub_id: str, loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{sub_id}{path}"


def parse_subscription(data: Mapping[str, Any], default_id: str | None = None) -> Subscription:
    """Validate one subscription; errors name the subscription (or ``default_id``) and the field."""
    sub_id = str(data.get("id") or default_id or "(subscription without id)")
    try:
        return Subscription.model_validate(dict(data))
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise ValidationFailed(_where(sub_id, tuple(first["loc"])), message) from None
