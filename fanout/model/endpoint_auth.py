"""How the dispatcher authenticates to a subscriber's endpoint (``Subscription.auth``), besides signing.

- ``header``: a static header, e.g. ``{"type": "header", "name": "X-Api-Key", "value": "..."}``;
- ``basic``: HTTP basic authentication;
- ``oauth2``: OAuth 2.0 client credentials: a token from ``token_url``, cached until it expires and
  refreshed once when the endpoint answers 401 (see ``fanout.http.auth``).

The secret fields (``value``, ``password``, ``client_secret``) are encrypted in the subscriptions topic
and never shown by the API or the CLI.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-length", "host", "transfer-encoding"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_control(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("contains a line break or another control character")
    return value


class HeaderAuth(_Strict):
    type: Literal["header"]
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(min_length=1, max_length=8192)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by fanout and cannot be overridden")
        return name

    _value = field_validator("value")(_no_control)


class BasicAuth(_Strict):
    type: Literal["basic"]
    username: str = Field(min_length=1, max_length=1024)
    password: str = Field(max_length=1024)

    @field_validator("username")
    @classmethod
    def _username(cls, username: str) -> str:
        if ":" in username:
            raise ValueError("must not contain ':'")
        return _no_control(username)

    _password = field_validator("password")(_no_control)


class OAuth2ClientCredentials(_Strict):
    type: Literal["oauth2"]
    token_url: str = Field(max_length=2048)
    client_id: str = Field(min_length=1, max_length=1024)
    client_secret: str = Field(min_length=1, max_length=4096)
    scope: str | None = Field(default=None, max_length=1024)
    audience: str | None = Field(default=None, max_length=1024)
    client_auth: Literal["basic", "post"] = "basic"

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return url


EndpointAuth = Annotated[HeaderAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="type")]
