"""SSRF guard, enforced where connections are made: in the resolver, and for IP literals at send time.

Only globally routable unicast addresses are allowed by default. The refused space is written out here
(``REFUSED_IPV4``, ``REFUSED_IPV6``, from the IANA special-purpose registries) rather than taken from
``ipaddress.is_global``, whose answer differs between Python versions and which passes IPv4-compatible
IPv6 (``::/96``) and site-local ``fec0::/10``. IPv6 outside ``2000::/3`` (global unicast) is refused
whole. Two IPv6 ranges that stand for an IPv4 address the host or a gateway will connect to are judged
by that address: IPv4-mapped ``::ffff:0:0/96`` and the NAT64 well-known prefix ``64:ff9b::/96`` (DNS64
networks give every IPv4-only host such an address). Every other range that carries an IPv4 address
(IPv4-compatible ``::/96``, SIIT ``::ffff:0:0:0/96``, local-use NAT64 ``64:ff9b:1::/48``, 6to4
``2002::/16``, Teredo ``2001::/32``) is refused whatever it carries. A CIDR in ``allow`` admits what it
covers (for the two judged ranges: the IPv6 address or the IPv4 address it stands for).
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
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
REFUSED_IPV4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
REFUSED_IPV6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, ORCHID, benchmarking 2001:2::/48, ...
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "3fff::/20",  # documentation
    )
)


class AddressRefused(OSError):
    """Every address the host resolved to is outside the allowed ranges."""


class AddressPolicy:
    def __init__(self, allow: Iterable[IPNetwork] = ()) -> None:
        self.allow = tuple(allow)

    def permits(self, address: str | IPAddress) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if self._allowed(ip):
            return True
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded is None:
                return ip in GLOBAL_UNICAST_IPV6 and not any(ip in net for net in REFUSED_IPV6)
            if self._allowed(embedded):
                return True
            ip = embedded
        return not any(ip in net for net in REFUSED_IPV4) and ip not in METADATA_ADDRESSES

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.allow)

    def check_literal(self, host: str) -> None:
        """Raise AddressRefused if ``host`` is an IP literal the policy refuses (names pass)."""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        if not self.permits(ip):
            raise AddressRefused(f"address {ip} is not allowed (SSRF guard)")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped or NAT64 (well-known prefix) address stands for."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


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
