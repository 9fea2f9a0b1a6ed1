from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from fanout.http.ssrf import AddressPolicy, AddressRefused, GuardedResolver

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "0.0.0.0",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "100.127.255.254",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "255.255.255.255",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",  # multicast
    "ff0e::1",  # global-scope multicast
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "fd00:ec2::254",  # AWS IPv6 metadata
    "2001:db8::1",  # documentation
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    # issue 13: the rest of the reserved space, IPv4
    "0.1.2.3",  # "this network"
    "192.0.0.1",  # IETF protocol assignments
    "192.0.0.9",
    "192.0.0.170",
    "192.88.99.1",  # 6to4 relay anycast
    "198.19.255.255",  # benchmarking
    "198.51.100.7",  # documentation
    "203.0.113.7",
    "240.0.0.1",  # reserved
    "254.255.255.255",
    # IPv6 that carries an IPv4 address
    "::127.0.0.1",  # IPv4-compatible (deprecated): passed before
    "::7f00:1",
    "::10.0.0.1",
    "::8.8.8.8",  # even a public one: the form is deprecated and routed unpredictably
    "::ffff:0:7f00:1",  # SIIT IPv4-translated
    "::ffff:0:808:808",
    "64:ff9b:1::a00:1",  # local-use NAT64
    "64:ff9b:1::808:808",
    "2002:5db8:d822::1",  # 6to4, even of a public address (deprecated)
    "2001::1",  # Teredo
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    # other special-purpose IPv6
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:20::1",  # ORCHIDv2
    "2001:db8:ffff::1",
    "3fff::1",  # documentation (2024)
    "3fff:fff::1",
    "fec0::1",  # site-local (deprecated)
    "feff::1",
    "5f00::1",  # SRv6 SIDs
    "4000::1",  # outside 2000::/3: unassigned
    "e000::1",
    "ff05::2",  # site-scope multicast
]

ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.1",  # just above
    "100.63.255.255",  # just below 100.64/10
    "2606:4700::1",
    "2a00:1450:4001:81b::200e",
    "::ffff:93.184.216.34",  # IPv4-mapped public
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34 (DNS64 networks)
    "2001:200::1",  # just above 2001::/23
    "2001:db9::1",  # just above 2001:db8::/32
    "2003::1",  # just above 2002::/16
    "3ffe::1",  # just below 3fff::/20
    "3fff:1000::1",  # just above it
    "2c0f:ffff::1",
    "192.0.1.1",  # just above 192.0.0.0/24
    "198.20.0.1",  # just above 198.18.0.0/15
    "223.255.255.254",  # just below multicast
    "1.0.0.1",  # just above 0.0.0.0/8
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(address)
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_permitted(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_allow_list_admits_its_ranges_only() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00:1::/32")])
    assert policy.permits("10.1.2.3")
    assert policy.permits("::ffff:10.1.2.3")  # judged by the IPv4 address it carries
    assert policy.permits("fd00:1::5")
    assert not policy.permits("10.2.0.1")
    assert not policy.permits("127.0.0.1")
    assert not policy.permits("fd00:2::5")
    assert policy.permits("93.184.216.34")


def test_allow_list_can_admit_loopback_for_tests() -> None:
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
    assert policy.permits("127.0.0.1")
    assert not policy.permits("::1")


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "::1", "169.254.169.254", "[::ffff:10.0.0.1]"])
def test_check_literal_refuses_refused_literals(host: str) -> None:
    with pytest.raises(AddressRefused, match="SSRF"):
        AddressPolicy().check_literal(host)


@pytest.mark.parametrize(
    "host", ["93.184.216.34", "[2606:4700::1]", "localhost", "metadata.google.internal", "example.com"]
)
def test_check_literal_passes_public_literals_and_any_name(host: str) -> None:
    AddressPolicy().check_literal(host)  # names are judged by the resolver, not here


def test_address_refused_is_an_os_error() -> None:
    """aiohttp wraps resolver OSErrors in ClientConnectorDNSError; the sender unwraps it."""
    assert issubclass(AddressRefused, OSError)


# -- the resolver --------------------------------------------------------------------------------


def result(host: str, address: str, family: int = socket.AF_INET) -> ResolveResult:
    return {"hostname": host, "host": address, "port": 443, "family": family, "proto": 0, "flags": 0}


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int, socket.AddressFamily]] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append((host, port, family))
        return [result(host, a, socket.AF_INET6 if ":" in a else socket.AF_INET) for a in self.answers[host]]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_keeps_only_permitted_addresses() -> None:
    inner = FakeResolver({"mixed.example": ["10.0.0.5", "93.184.216.34", "::1", "2606:4700::1"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    results = await resolver.resolve("mixed.example", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700::1"]
    assert inner.calls == [("mixed.example", 443, socket.AF_UNSPEC)]


async def test_resolver_refuses_a_host_with_only_refused_addresses() -> None:
    inner = FakeResolver({"internal.example": ["169.254.169.254", "10.0.0.1"]})
    with pytest.raises(AddressRefused) as caught:
        await GuardedResolver(AddressPolicy(), inner).resolve("internal.example", 80)
    message = str(caught.value)
    assert "internal.example" in message
    assert "10.0.0.1" in message and "169.254.169.254" in message


async def test_resolver_with_no_answers_is_refused() -> None:
    with pytest.raises(AddressRefused, match="no address"):
        await GuardedResolver(AddressPolicy(), FakeResolver({"empty.example": []})).resolve("empty.example")


async def test_resolver_honours_the_allow_list() -> None:
    inner = FakeResolver({"receiver.test": ["127.0.0.1"]})
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
    results = await GuardedResolver(policy, inner).resolve("receiver.test", 8080)
    assert [r["host"] for r in results] == ["127.0.0.1"]


async def test_resolver_close_closes_the_inner_resolver() -> None:
    inner = FakeResolver({})
    await GuardedResolver(AddressPolicy(), inner).close()
    assert inner.closed


def test_allow_list_of_ipv6_ranges_that_carry_ipv4() -> None:
    policy = AddressPolicy([ipaddress.ip_network("64:ff9b::/96")])
    assert policy.permits("64:ff9b::a00:1")
    assert not AddressPolicy().permits("64:ff9b::a00:1")


def test_allowing_loopback_does_not_admit_other_forms_that_carry_it() -> None:
    """The test settings allow 127.0.0.0/8; only the forms a host connects to as IPv4 are admitted."""
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
    assert policy.permits("::ffff:127.0.0.1")
    assert policy.permits("64:ff9b::7f00:1")
    for carrier in ("::127.0.0.1", "::ffff:0:7f00:1", "64:ff9b:1::7f00:1", "2002:7f00:1::1"):
        assert not policy.permits(carrier), carrier


def test_an_allowed_ipv6_range_admits_its_own_reserved_addresses() -> None:
    assert AddressPolicy([ipaddress.ip_network("::/96")]).permits("::127.0.0.1")
    assert AddressPolicy([ipaddress.ip_network("2001:db8::/32")]).permits("2001:db8::1")


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "::127.0.0.1", "[fec0::1]", "[2002:7f00:1::1]", "0.0.0.1"])
def test_check_literal_refuses_reserved_literals(host: str) -> None:
    with pytest.raises(AddressRefused, match="SSRF"):
        AddressPolicy([ipaddress.ip_network("127.0.0.0/8")]).check_literal(host)
