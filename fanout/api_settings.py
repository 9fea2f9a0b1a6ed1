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
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(min_length=1)


class JwtSettings(_Section):
    """OAuth 2.0 bearer JWTs, checked against the issuer's JWKS (signature, iss, aud, exp)."""

    jwks_url: str = Field(pattern=r"^https?://")
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: list[str] = Field(default=["RS256", "ES256"], min_length=1)
    leeway: float = Field(default=30, ge=0, le=600)
    scope_claim: str = "scope"
    jwks_cache_seconds: float = Field(default=300, ge=0)


class IngestSource(_Section):
    """An inbound webhook source: how ``POST /v1/ingest/{source}`` verifies requests, and where to
    publish them. ``secrets`` are the signing secrets (``standard-webhooks``: ``whsec_...``; ``github``,
    ``stripe``: the endpoint secret) or, for ``token``, the accepted tokens."""

    scheme: Literal["standard-webhooks", "github", "stripe", "token"]
    topic: str = Field(pattern=TOPIC_NAME)
    secrets: list[SecretStr] = Field(min_length=1)
    tolerance: float = Field(default=300, gt=0, description="Seconds of timestamp skew accepted.")
    token_header: str = Field(default="Authorization", description="token scheme: the header to read.")
    event_type: str | None = Field(default=None, description="A fixed event type for every request.")
    event_type_header: str | None = None
    event_type_field: str | None = None

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
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    topics: list[str] = Field(default_factory=list, description="Topics POST /v1/events may publish to.")
    default_topic: str | None = None
    keys: list[ApiKey] = Field(default_factory=list)
    jwt: JwtSettings | None = None
    ingest: dict[str, IngestSource] = Field(default_factory=dict)
    secret_grace: float = Field(default=24 * 3600, ge=0, description="Seconds the old secret stays valid.")
    test_timeout: float = Field(default=10, gt=0, le=60)
    produce_timeout: float = Field(default=30, gt=0, le=300)
    resolve_urls: bool = Field(default=True, description="Resolve subscription hosts when they are written.")
    read_timeout: float = Field(
        default=30, gt=0, le=3600, description="Seconds from a request's first byte to its last, or 408."
    )
    max_connections_per_client: int = Field(
        default=256, ge=0, description="Open connections per client address (0: no cap); more get 429."
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
    """The web console that ``fanout api`` serves at ``/console/`` (``fanout.api.console``).

    ``session_key`` seals the session cookies (AES-GCM, and the CSRF tokens are derived from it): base64
    of 32 or more random bytes (``fanout keys encryption`` makes one). Give every replica the same key.
    Unset, each process draws a random key at start: sessions then end when it restarts and are valid
    on that replica only (the API logs a warning saying so)."""

    enabled: bool = True
    session_ttl: float = Field(
        default=8 * 3600, ge=60, le=30 * 86400, description="Seconds a sign-in lasts (not extended by use)."
    )
    session_key: SecretStr | None = None
    cookie_secure: Literal["auto", "always"] = Field(
        default="auto",
        description="auto: Secure cookies when the request came over TLS; always: behind a TLS proxy.",
    )

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
