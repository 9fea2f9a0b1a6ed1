"""SSRF guard, enforced where connections are made: in the resolver, and for IP-literal URLs at send time.

Only globally routable addresses are allowed by default; loopback, private, link-local (which includes
the 169.254.169.254 metadata service), shared, reserved and multicast ranges are refused unless a CIDR
in ``allow`` admits them. IPv6 addresses that carry an IPv4 address a gateway may forward to (IPv4-mapped
``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by that IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class AddressRefused(OSError):
    """Every address the host resolved to is outside the allowed ranges."""


class AddressPolicy:
    def __init__(self, allow: Iterable[IPNetwork] = ()) -> None:
        self.allow = tuple(allow)

    def permits(self, address: str | IPAddress) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(ip in net for net in self.allow):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            ip = _embedded_ipv4(ip) or ip
            if any(ip in net for net in self.allow):
                return True
        return ip.is_global and not ip.is_multicast and ip not in METADATA_ADDRESSES

    def check_literal(self, host: str) -> None:
        """Raise AddressRefused if ``host`` is an IP literal the policy refuses (names pass)."""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        if not self.permits(ip):
            raise AddressRefused(f"address {ip} is not allowed (SSRF guard)")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the addresses ``policy`` permits."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.permits(r["host"])]
        if not allowed:
            refused = ", ".join(sorted({r["host"] for r in results})) or "no address"
            raise AddressRefused(f"{host} resolves to {refused}, which is not allowed (SSRF guard)")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


async def url_refusal(
    url: str,
    policy: AddressPolicy,
    allow_http: bool,
    resolver: AbstractResolver | None,
    resolve_seconds: float = 3.0,
) -> str | None:
    """Why fanout would refuse to contact ``url``, checked when a subscription is written: the scheme,
    an IP literal, or a name whose every address the policy refuses. A name that does not resolve now
    passes (DNS may not be set up yet); the resolver guard still applies at every send."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not allow_http:
        return "http:// URLs are refused; use https:// (or set delivery.allow_http)"
    host = (parts.hostname or "").strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        try:
            policy.check_literal(host)
        except AddressRefused as exc:
            return str(exc)
        return None
    if resolver is None:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        results = await asyncio.wait_for(resolver.resolve(host, port, socket.AF_UNSPEC), resolve_seconds)
    except (OSError, TimeoutError, ValueError, UnicodeError):
        return None
    if results and not any(policy.permits(r["host"]) for r in results):
        refused = ", ".join(sorted({r["host"] for r in results}))
        return f"{host} resolves to {refused}, which is not allowed (SSRF guard)"
    return None
