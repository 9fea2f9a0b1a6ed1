"""The delivery transport's settings (part of ``delivery.*``; ``DeliverySettings`` inherits them).

A subscription's ``timeout`` stays the bound on an attempt (``Timeouts.read`` and ``total``); these add
the connect and pool timeouts, the connection limits beside ``max_connections`` and
``connections_per_host``, the response limits and the egress proxy.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

KIB = 1024
MIB = 1024 * 1024


def parse_proxy_url(url: str) -> tuple[str, int, str | None, str | None]:
    """(host, port, user, password) of an ``http://[user[:password]@]host[:port]`` proxy URL (a bare
    ``host:port`` means http); raises ValueError saying what is wrong."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    port = parts.port or 80  # ValueError for a bad port
    if parts.scheme != "http":
        raise ValueError("only http:// proxies are supported (https targets are tunnelled with CONNECT)")
    if not parts.hostname:
        raise ValueError("the proxy URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a proxy URL has no path, query or fragment")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, user, password


class TransportSettings(BaseModel):
    """How deliveries go over the wire: the transport, its timeouts and limits, the egress proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    transport: Literal["fast", "aiohttp"] = Field(
        default="fast",
        description="The HTTP client for deliveries: fast (fanout's own, on httptools) or aiohttp.",
    )
    connect_timeout: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Seconds for each address's TCP connect and for the TLS handshake (at most the "
        "subscription's timeout); the next address is tried after 0.25 s, or at once on failure.",
    )
    pool_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a delivery waits for a connection slot; then it spills like a full lane "
        "(not an attempt, not a breaker failure).",
    )
    max_keepalive: int = Field(
        default=1024,
        ge=0,
        description="Idle keep-alive connections kept, in all (the oldest is closed first).",
    )
    keepalive_expiry: float = Field(
        default=4.0,
        gt=0,
        le=300,
        description="Seconds an idle connection is kept (below the 5 s after which many servers close them).",
    )
    max_response_header_bytes: int = Field(
        default=64 * KIB,
        ge=KIB,
        le=MIB,
        description="Cap on a response's status line and headers; above it the attempt fails (retryable).",
    )
    max_response_body_bytes: int = Field(
        default=MIB,
        ge=KIB,
        le=64 * MIB,
        description="Cap on a response body: past it the connection is closed and the attempt fails "
        "(retryable).",
    )
    proxy: str | None = Field(
        default=None,
        description="Egress proxy for every delivery, http://[user[:password]@]host[:port] (the password "
        "is moved to proxy_password).",
    )
    proxy_password: SecretStr | None = None
    """Password for the egress proxy (a secret; a password given in `proxy` moves here)."""
    trust_env: bool = Field(
        default=False,
        description="Without delivery.proxy: use HTTPS_PROXY / HTTP_PROXY, honouring NO_PROXY.",
    )
    proxy_enforces_egress: bool = Field(
        default=False,
        description="The proxy enforces egress policy itself: proxied targets are not resolved and checked "
        "by the SSRF guard first (the proxy gets the name).",
    )

    @model_validator(mode="before")
    @classmethod
    def _proxy_password(cls, data: Any) -> Any:
        """A password in ``proxy`` moves to ``proxy_password`` (a secret string, never printed)."""
        if isinstance(data, dict) and isinstance(data.get("proxy"), str) and data["proxy"]:
            try:
                host, port, _user, password = parse_proxy_url(data["proxy"])
            except ValueError:
                return data  # the field validator says what is wrong
            if password is not None:
                url = data["proxy"] if "://" in data["proxy"] else "http://" + data["proxy"]
                data = dict(data)
                data.setdefault("proxy_password", password)
                bracketed = f"[{host}]" if ":" in host else host
                data["proxy"] = f"http://{urlsplit(url).username}@{bracketed}:{port}"
        return data

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, proxy: str | None) -> str | None:
        if proxy:
            try:
                parse_proxy_url(proxy)
            except ValueError as exc:
                raise ValueError(f"not a usable proxy URL: {exc}") from None
        return proxy or None
