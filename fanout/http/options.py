"""What both transports are built from (``TransportOptions``), and ``open_transport`` choosing one by
``delivery.transport``: ``fast`` (``fanout.http.fast``, the default) or ``aiohttp``
(``fanout.http.aiohttp_transport``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from fanout.config import DeliverySettings
from fanout.http.proxy import ProxyRoutes
from fanout.http.ssrf import AddressPolicy
from fanout.http.transport import Limits, ResponseLimits, Timeouts, Transport


@dataclass(frozen=True)
class TransportOptions:
    """``resolver`` resolves names without the guard (the transport applies ``policy`` to targets, never
    to the proxy). ``proxy_enforces_egress``: a proxied target is not resolved and checked here."""

    policy: AddressPolicy
    limits: Limits = field(default_factory=Limits)
    response: ResponseLimits = field(default_factory=ResponseLimits)
    resolver: AbstractResolver = field(default_factory=DefaultResolver)
    dns_ttl: float = 10.0
    proxies: ProxyRoutes = field(default_factory=ProxyRoutes)
    proxy_enforces_egress: bool = False


def limits(settings: DeliverySettings) -> Limits:
    return Limits(
        max_connections=settings.max_connections,
        connections_per_host=settings.connections_per_host,
        max_keepalive=settings.max_keepalive,
        keepalive_expiry=settings.keepalive_expiry,
    )


def response_limits(settings: DeliverySettings, body_prefix: int = 0) -> ResponseLimits:
    return ResponseLimits(
        header_block=settings.max_response_header_bytes,
        body_prefix=min(body_prefix, settings.max_response_body_bytes),
        body=settings.max_response_body_bytes,
    )


def timeouts(settings: DeliverySettings, seconds: float) -> Timeouts:
    """A subscription's ``timeout`` (``seconds``) bounds the attempt: it is both ``read`` and ``total``;
    ``connect`` (each address, and TLS) and ``pool`` (the wait for a slot, outside the attempt) are the
    settings'."""
    return Timeouts(
        connect=min(settings.connect_timeout, seconds),
        read=seconds,
        pool=settings.pool_timeout,
        total=seconds,
    )


def transport_options(
    settings: DeliverySettings,
    policy: AddressPolicy,
    resolver: AbstractResolver | None = None,
    body_prefix: int = 0,
) -> TransportOptions:
    """Raises ``ConfigError`` for a bad proxy URL (also one from the environment). ``body_prefix``:
    bytes of each response body the transport keeps (the delivery history's)."""
    password = settings.proxy_password.get_secret_value() if settings.proxy_password else None
    return TransportOptions(
        policy=policy,
        limits=limits(settings),
        response=response_limits(settings, body_prefix),
        resolver=resolver if resolver is not None else DefaultResolver(),
        dns_ttl=settings.dns_cache_seconds,
        proxies=ProxyRoutes.configure(settings.proxy, password, settings.trust_env),
        proxy_enforces_egress=settings.proxy_enforces_egress,
    )


def open_transport(kind: str, options: TransportOptions) -> Transport:
    """The transport named ``kind`` (``fast`` or ``aiohttp``); ``start()`` it in the running loop."""
    if kind == "aiohttp":
        from fanout.http.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(options)
    from fanout.http.fast import FastTransport

    return FastTransport(options)
