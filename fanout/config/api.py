"""Settings of the control plane: the HTTP API (``api``), its web console (``console``) and secrets at
rest (``secrets``).

Sections of ``fanout.config.Settings`` (re-exported there); kept apart because they are many and only
the API and the subscriptions codec read them.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


SCOPES = (
    "events:publish",
    "subscriptions:read",
    "subscriptions:write",
    "dead-letters:read",
    "dead-letters:replay",
    "deliveries:read",
)
Scope = Literal[
    "events:publish",
    "subscriptions:read",
    "subscriptions:write",
    "dead-letters:read",
    "dead-letters:replay",
    "deliveries:read",
]
TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"
# Room for what a published record carries beyond the request body: the id fanout adds, the key and
# the headers (traceparent, content-type), and Kafka's own record overhead.
RECORD_OVERHEAD_BYTES = 16 * 1024


class ApiKey(_Section):
    """A static API key, stored as the SHA-256 of the key (``fanout keys api`` makes one)."""

    name: str = Field(min_length=1, max_length=64)
    """Who the key is for (shown in logs; not secret)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the key, lower-case hex (the key itself is stored nowhere)."""
    scopes: list[Scope] = Field(min_length=1)
    """Scopes the key grants: `events:publish`, `subscriptions:read`, `subscriptions:write`,
    `dead-letters:read`, `dead-letters:replay`, `deliveries:read` (the delivery history)."""


class JwtSettings(_Section):
    """OAuth 2.0 bearer JWTs, checked against the issuer's JWKS (signature, iss, aud, exp)."""

    jwks_url: str = Field(pattern=r"^https?://")
    """URL of the issuer's JSON Web Key Set (fetched and cached)."""
    issuer: str = Field(min_length=1)
    """Required `iss` claim."""
    audience: str = Field(min_length=1)
    """Required `aud` claim."""
    algorithms: list[str] = Field(default=["RS256", "ES256"], min_length=1)
    """Signature algorithms accepted."""
    leeway: float = Field(default=30, ge=0, le=600)
    """Seconds of clock skew allowed when checking `exp`."""
    scope_claim: str = "scope"
    """Claim that lists the granted scopes (space-separated text, or a list)."""
    jwks_cache_seconds: float = Field(default=300, ge=0)
    """Seconds the key set is cached; a token with an unknown key id fetches it again sooner (at most every
    10 s)."""


class IngestSource(_Section):
    """An inbound webhook source: how ``POST /v1/ingest/{source}`` verifies requests, and where to
    publish them. ``secrets`` are the signing secrets (``standard-webhooks``: ``whsec_...``; ``github``,
    ``stripe``: the endpoint secret) or, for ``token``, the accepted tokens."""

    scheme: Literal["standard-webhooks", "github", "stripe", "token"]
    """How requests are verified: `standard-webhooks`, `github`, `stripe` or `token`."""
    topic: str = Field(pattern=TOPIC_NAME)
    """Topic the verified events are published to."""
    secrets: list[SecretStr] = Field(min_length=1)
    """Signing secrets (`whsec_...` for `standard-webhooks`; the endpoint secret for `github` and `stripe`)
    or, for `token`, the accepted tokens."""
    tolerance: float = Field(default=300, gt=0, description="Seconds of timestamp skew accepted.")
    token_header: str = Field(default="Authorization", description="token scheme: the header to read.")
    event_type: str | None = Field(default=None, description="A fixed event type for every request.")
    event_type_header: str | None = None
    """Header that carries the event type (`github`'s default: `X-GitHub-Event`)."""
    event_type_field: str | None = None
    """Field of the JSON body that carries the event type (default for `stripe` and `standard-webhooks`:
    `type`)."""

    @model_validator(mode="after")
    def _standard_secrets(self) -> IngestSource:
        if self.scheme == "standard-webhooks":
            for secret in self.secrets:
                text = secret.get_secret_value()
                try:
                    base64.b64decode(text.removeprefix("whsec_"), validate=True)
                except binascii.Error:
                    raise ValueError("standard-webhooks secrets must be whsec_<base64>") from None
        return self


class ApiSettings(_Section):
    """The HTTP API (``fanout api``)."""

    host: str = "0.0.0.0"
    """Address the API binds: every interface by default (for containers; every `/v1` route needs a
    credential)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the API."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body (413 above it); it plus 16 KiB for headers must fit in
    `kafka.message_max_bytes`."""
    topics: list[str] = Field(
        default_factory=list,
        description="Topics POST /v1/events may publish to (never internal ones); empty: none.",
    )
    default_topic: str | None = None
    """Topic of `POST /v1/events` without `?topic=`; must be one of `topics`."""
    keys: list[ApiKey] = Field(default_factory=list)
    """Static API keys, each `{name, sha256, scopes}` (`fanout keys api` makes one)."""
    jwt: JwtSettings | None = None
    """OAuth 2.0 JWTs, checked against the issuer's key set; unset: no JWT is accepted."""
    ingest: dict[str, IngestSource] = Field(default_factory=dict)
    """Inbound webhook sources by name: `POST /v1/ingest/{source}` (docs/api.md, "Inbound webhooks")."""
    secret_grace: float = Field(
        default=24 * 3600, ge=0, description="Seconds a rotated-out secret is still signed with (by default)."
    )
    test_timeout: float = Field(default=10, gt=0, le=60)
    """Seconds `POST /v1/subscriptions/{id}/test` waits for the endpoint."""
    produce_timeout: float = Field(default=30, gt=0, le=300)
    """Seconds the API waits for the broker to acknowledge a publish, then answers 503."""
    resolve_urls: bool = Field(
        default=True,
        description="Resolve a subscription's host when it is written, and refuse it (400) when the SSRF "
        "guard refuses every address.",
    )
    read_timeout: float = Field(
        default=30, gt=0, le=3600, description="Seconds from a request's first byte to its last, or 408."
    )
    max_connections_per_client: int = Field(
        default=256,
        ge=0,
        description="Open connections per client address (0: no cap); one more is answered 429 and closed. "
        "Behind a proxy every client has the proxy's address: raise it, or set 0.",
    )
    idempotency_window: float = Field(
        default=24 * 3600,
        gt=0,
        description="Seconds a replica remembers the request an Idempotency-Key was used with (409 on reuse)",
    )
    idempotency_max_keys: int = Field(
        default=50_000, ge=1, description="Idempotency-Keys a replica remembers at most; the oldest go first."
    )

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not re.fullmatch(TOPIC_NAME, topic):
                raise ValueError(f"{topic!r} is not a valid Kafka topic name")
        return topics

    @field_validator("ingest")
    @classmethod
    def _source_names(cls, ingest: dict[str, IngestSource]) -> dict[str, IngestSource]:
        for name in ingest:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
                raise ValueError(f"ingest source name {name!r}: use letters, digits, . _ -")
        return ingest

    @model_validator(mode="after")
    def _default_topic(self) -> ApiSettings:
        if self.default_topic is not None and self.default_topic not in self.topics:
            raise ValueError(f"default_topic {self.default_topic!r} is not in topics (the allow-list)")
        return self


class SecretsSettings(_Section):
    """AES-GCM keys for secrets at rest in the subscriptions topic: base64 of 16, 24 or 32 bytes
    (``fanout keys encryption`` makes one). The first key encrypts; every key decrypts."""

    keys: list[SecretStr] = Field(default_factory=list)
    """AES-GCM keys, base64 (`fanout keys encryption` makes one): the first encrypts, every one decrypts.
    Empty: subscription secrets are written to the topic unencrypted, with a warning; set it in production."""

    @field_validator("keys")
    @classmethod
    def _aes_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for i, key in enumerate(keys):
            try:
                raw = base64.b64decode(key.get_secret_value(), validate=True)
            except binascii.Error:
                raise ValueError(f"key {i} is not valid base64") from None
            if len(raw) not in (16, 24, 32):
                raise ValueError(f"key {i} must decode to 16, 24 or 32 bytes, not {len(raw)}")
        return keys


class ConsoleSettings(_Section):
    """The web console that `fanout api` serves at `/console/` (docs/console.md): same process, same
    credentials and scopes as the API."""

    enabled: bool = True
    """Serve the console at `/console/`."""
    session_ttl: float = Field(default=8 * 3600, ge=60, le=30 * 86400)
    """Seconds a sign-in lasts, however much the session is used (not extended by use)."""
    session_key: SecretStr | None = None
    """Seals the session cookies (AES-256-GCM; the CSRF tokens are derived from it): base64 of 32 or more
    random bytes (`fanout keys encryption` makes one). Give every replica the same key. Unset, each
    process draws a random key at start: sessions then end when it restarts and work on that replica only
    (logged as a warning)."""
    cookie_secure: Literal["auto", "always"] = "auto"
    """`auto`: the session cookie is `Secure` when the request came over TLS; `always`: behind a
    TLS-terminating proxy."""

    @field_validator("session_key")
    @classmethod
    def _key_bytes(cls, key: SecretStr | None) -> SecretStr | None:
        if key is None:
            return None
        try:
            raw = base64.b64decode(key.get_secret_value(), validate=True)
        except binascii.Error:
            raise ValueError("is not valid base64") from None
        if len(raw) < 32:
            raise ValueError(f"must decode to at least 32 bytes, not {len(raw)}")
        return key
