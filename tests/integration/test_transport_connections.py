"""Both transports, connecting: TLS, IPv6 and IDNA hosts, happy eyeballs and the SSRF guard, connection
limits and idle connections, and the egress proxy (CONNECT and forwarding). Every case runs against
``fast`` and ``aiohttp`` and requires the same outcome class."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trustme

from fanout.config import DeliverySettings
from fanout.http.fast import FastTransport
from fanout.http.proxy import Proxy, ProxyRoutes
from fanout.http.sender import HttpSender
from fanout.http.transport import (
    ConnectError,
    ConnectTimeout,
    EgressRefused,
    Limits,
    Origin,
    PoolTimeout,
    ServerDisconnected,
    Timeouts,
    TLSError,
)
from tests.rawhttp import (
    NO_CONTENT,
    TRANSPORTS,
    Conn,
    LocalProxy,
    MapResolver,
    RawServer,
    answer,
    blackhole,
    client_context,
    expired_context,
    open_test_transport,
    post,
    self_signed_context,
    server_context,
    serving,
)
from tests.unit.factories import make_delivery, make_sub

T = Timeouts(connect=5, read=10, pool=5, total=10)
IDNA = "xn--bcher-kva.test"  # bücher.test


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["none", "wrong-hostname", "expired", "self-signed", "untrusted-ca"])
async def test_tls_certificates_are_verified(kind: str, ca: trustme.CA, problem: str) -> None:
    contexts = {
        "none": lambda: server_context(ca.issue_cert("good.test")),
        "wrong-hostname": lambda: server_context(ca.issue_cert("other.test")),
        "expired": lambda: expired_context(ca, "good.test"),
        "self-signed": lambda: self_signed_context("good.test"),
        "untrusted-ca": lambda: server_context(trustme.CA().issue_cert("good.test")),
    }
    resolver = MapResolver({"good.test": ["127.0.0.1"]})
    async with (
        serving(answer(NO_CONTENT), tls=contexts[problem]()) as server,
        open_test_transport(kind, resolver) as t,
    ):
        origin = Origin("https", "good.test", server.port, client_context(ca))
        if problem == "none":
            assert (await t.send(post(origin), T)).status == 204
        else:
            with pytest.raises(TLSError):
                await t.send(post(origin), T)
            assert not server.requests


async def test_mutual_tls(ca: trustme.CA) -> None:
    """Without the certificate the server ends the connection after the handshake (TLS 1.3 checks the
    client's certificate late): both transports fail the same way, before any response."""
    client_ca = trustme.CA()
    tls = server_context(ca.issue_cert("good.test"), client_ca=client_ca)
    resolver = MapResolver({"good.test": ["127.0.0.1"]})
    failures = set()
    for kind in TRANSPORTS:
        async with serving(answer(NO_CONTENT), tls=tls) as server, open_test_transport(kind, resolver) as t:
            with_cert = Origin(
                "https", "good.test", server.port, client_context(ca, client_ca.issue_cert("me"))
            )
            assert (await t.send(post(with_cert), T)).status == 204
            without = Origin("https", "good.test", server.port, client_context(ca))
            with pytest.raises((TLSError, ServerDisconnected)) as failed:
                await t.send(post(without), T)
            failures.add(type(failed.value))
        assert len(server.requests) == 1
    assert len(failures) == 1, failures


# -- hosts and addresses ----------------------------------------------------------------------------


async def test_an_ipv6_literal(kind: str) -> None:
    async with serving(answer(NO_CONTENT), host="::1") as server, open_test_transport(kind) as t:
        assert (await t.send(post(Origin("http", "::1", server.port)), T)).status == 204
    assert server.requests[0].header("host") == f"[::1]:{server.port}"


async def test_an_idna_host(kind: str, ca: trustme.CA) -> None:
    resolver = MapResolver({IDNA: ["127.0.0.1"]})
    tls = server_context(ca.issue_cert(IDNA))
    async with serving(answer(NO_CONTENT), tls=tls) as server, open_test_transport(kind, resolver) as t:
        origin = Origin("https", IDNA, server.port, client_context(ca))
        assert (await t.send(post(origin), T)).status == 204
    assert server.requests[0].header("host") == f"{IDNA}:{server.port}"
    assert resolver.asked == [IDNA]


async def test_an_idna_subscription_url_through_the_sender(kind: str, ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    resolver = MapResolver({IDNA: ["127.0.0.1"]})
    async with serving(answer(NO_CONTENT), tls=server_context(ca.issue_cert(IDNA))) as server:
        settings = DeliverySettings(transport=kind, allow_cidrs=["127.0.0.0/8"], ca_bundle=bundle)
        sender = HttpSender(settings, resolver)
        await sender.start()
        try:
            sub = make_sub(url=f"https://bücher.test:{server.port}/hook", headers={"X-Tenant": "café"})
            assert await sender.send(make_delivery(sub)) == 204
        finally:
            await sender.close()
    request = server.requests[0]
    assert request.header("host") == f"{IDNA}:{server.port}" and request.header("webhook-id")
    assert resolver.asked == [IDNA]


async def test_a_blackholed_first_address_does_not_hold_up_the_second(kind: str) -> None:
    async with blackhole("127.0.0.2") as port, serving(answer(NO_CONTENT), port=port) as server:
        resolver = MapResolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
        slow_connect = Timeouts(connect=4, read=10, pool=5, total=10)
        async with open_test_transport(kind, resolver) as t:
            started = time.monotonic()
            assert (await t.send(post(Origin("http", "two.test", port)), slow_connect)).status == 204
            elapsed = time.monotonic() - started
    assert elapsed < 3.0, "the second address started after the delay, not after the first's timeout"
    assert server.connections == 1


async def test_an_address_that_never_answers_is_a_connect_timeout(kind: str) -> None:
    async with blackhole("127.0.0.2") as port:
        resolver = MapResolver({"hole.test": ["127.0.0.2"]})
        async with open_test_transport(kind, resolver) as t:
            started = time.monotonic()
            with pytest.raises(ConnectTimeout):
                await t.send(post(Origin("http", "hole.test", port)), Timeouts(0.5, 10, 5, 10))
    assert time.monotonic() - started < 0.5 + 2.0


async def test_a_refused_connection_is_a_connect_error(kind: str) -> None:
    async with serving(answer(NO_CONTENT)) as server:
        pass
    async with open_test_transport(kind) as t:
        with pytest.raises(ConnectError) as refused:
            await t.send(post(Origin("http", "127.0.0.1", server.port)), T)
    assert not isinstance(refused.value, ConnectTimeout | EgressRefused)


async def test_the_ssrf_guard_checks_every_address(kind: str) -> None:
    import ipaddress

    only_one = (ipaddress.ip_network("127.0.0.1/32"),)
    resolver = MapResolver({"mixed.test": ["127.0.0.3", "127.0.0.1"], "inside.test": ["127.0.0.3"]})
    async with (
        serving(answer(NO_CONTENT)) as allowed,
        serving(answer(NO_CONTENT), host="127.0.0.3", port=allowed.port) as refused,
        open_test_transport(kind, resolver, allow=only_one) as t,
    ):
        assert (await t.send(post(Origin("http", "mixed.test", allowed.port)), T)).status == 204
        with pytest.raises(EgressRefused):
            await t.send(post(Origin("http", "inside.test", allowed.port)), T)
        with pytest.raises(EgressRefused):
            await t.send(post(Origin("http", "127.0.0.3", allowed.port)), T)
    assert refused.connections == 0 and allowed.connections == 1


# -- connection limits ------------------------------------------------------------------------------


async def test_idle_connections_never_keep_a_new_host_waiting(kind: str) -> None:
    limits = Limits(max_connections=4, connections_per_host=4, max_keepalive=16, keepalive_expiry=60)
    quick_pool = Timeouts(connect=5, read=10, pool=0.5, total=10)
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(serving(answer(NO_CONTENT))) for _ in range(8)]
        t = await stack.enter_async_context(open_test_transport(kind, limits=limits))
        for server in servers:  # the first four stay idle while the next four are contacted
            assert (await t.send(post(Origin("http", "127.0.0.1", server.port)), quick_pool)).status == 204
        if isinstance(t, FastTransport):
            assert t.pool.open <= 4
            await _until(lambda: sum(s.open for s in servers) <= 4)  # the oldest idle ones were closed
            assert [s.open for s in servers[4:]] == [1, 1, 1, 1]


async def test_a_wait_for_a_busy_slot_ends_in_a_pool_timeout(kind: str) -> None:
    release = asyncio.Event()

    async def held(conn: Conn) -> None:
        await conn.request()
        await release.wait()
        await conn.send(NO_CONTENT)

    limits = Limits(max_connections=2, connections_per_host=2)
    quick_pool = Timeouts(connect=5, read=10, pool=0.3, total=10)
    async with serving(held) as server, open_test_transport(kind, limits=limits) as t:
        origin = Origin("http", "127.0.0.1", server.port)
        busy = [asyncio.ensure_future(t.send(post(origin), quick_pool)) for _ in range(2)]
        await _until(lambda: len(server.requests) == 2)
        with pytest.raises(PoolTimeout):
            await t.send(post(origin), quick_pool)
        release.set()
        assert [r.status for r in await asyncio.gather(*busy)] == [204, 204]
    assert len(server.requests) == 2, "the request that timed out waiting was never sent"


async def test_connections_per_host_are_limited(kind: str) -> None:
    async def slow(conn: Conn) -> None:
        while True:
            await conn.request()
            await asyncio.sleep(0.02)
            await conn.send(NO_CONTENT)

    limits = Limits(max_connections=100, connections_per_host=5)
    async with serving(slow) as server, open_test_transport(kind, limits=limits) as t:
        origin = Origin("http", "127.0.0.1", server.port)
        results = await asyncio.gather(*(t.send(post(origin), T) for _ in range(40)))
    assert all(r.status == 204 for r in results)
    assert server.peak == 5 and server.connections == 5


async def test_idle_connections_expire_on_a_timer(kind: str) -> None:
    limits = Limits(keepalive_expiry=0.3)
    async with serving(answer(NO_CONTENT)) as server, open_test_transport(kind, limits=limits) as t:
        assert (await t.send(post(Origin("http", "127.0.0.1", server.port)), T)).status == 204
        await asyncio.wait_for(server.closed.wait(), 5)  # closed by the client, with no request since
    assert server.connections == 1 and server.open == 0


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- the egress proxy -------------------------------------------------------------------------------


def _through(proxy: LocalProxy, credentials: str | None = None) -> ProxyRoutes:
    url = f"http://{credentials + '@' if credentials else ''}127.0.0.1:{proxy.port}"
    return ProxyRoutes(Proxy.parse(url))


@pytest.fixture
async def tls_target(ca: trustme.CA) -> AsyncIterator[RawServer]:
    tls = server_context(ca.issue_cert("secure.test", "inside.test"))
    async with serving(answer(NO_CONTENT), tls=tls) as server:
        yield server


async def test_https_through_a_connect_proxy(kind: str, ca: trustme.CA, tls_target: RawServer) -> None:
    resolver = MapResolver({"secure.test": ["127.0.0.1"]})
    async with LocalProxy(credentials="bob:s3cret").running() as proxy:
        routes = _through(proxy, "bob:s3cret")
        async with open_test_transport(kind, resolver, proxies=routes) as t:
            origin = Origin("https", "secure.test", tls_target.port, client_context(ca))
            for _ in range(2):
                assert (await t.send(post(origin), T)).status == 204
    assert proxy.connects == [f"127.0.0.1:{tls_target.port}"], "the checked address, not the name"
    assert proxy.authorizations[0] is not None and proxy.authorizations[0].startswith("Basic ")
    assert tls_target.requests[0].header("host") == f"secure.test:{tls_target.port}"


async def test_http_through_a_forwarding_proxy(kind: str) -> None:
    resolver = MapResolver({"plain.test": ["127.0.0.1"]})
    async with (
        serving(answer(NO_CONTENT)) as server,
        LocalProxy(credentials="bob:pw").running() as proxy,
        open_test_transport(kind, resolver, proxies=_through(proxy, "bob:pw")) as t,
    ):
        assert (await t.send(post(Origin("http", "plain.test", server.port), "/hook?q=1"), T)).status == 204
    assert proxy.forwarded == [f"POST http://127.0.0.1:{server.port}/hook?q=1 HTTP/1.1"]
    assert server.requests[0].header("host") == f"plain.test:{server.port}"
    assert not proxy.connects


async def test_the_ssrf_guard_applies_before_connect(
    kind: str, ca: trustme.CA, tls_target: RawServer
) -> None:
    resolver = MapResolver({"inside.test": ["127.0.0.1"]})
    origin = Origin("https", "inside.test", tls_target.port, client_context(ca))
    async with LocalProxy(names={"inside.test": "127.0.0.1"}).running() as proxy:
        routes = _through(proxy)
        async with open_test_transport(kind, resolver, allow=(), proxies=routes) as t:
            with pytest.raises(EgressRefused):
                await t.send(post(origin), T)
        assert not proxy.connects, "refused before CONNECT"
        async with open_test_transport(
            kind, resolver, allow=(), proxies=routes, proxy_enforces_egress=True
        ) as t:
            assert (await t.send(post(origin), T)).status == 204
    assert proxy.connects == [f"inside.test:{tls_target.port}"], "the proxy enforces egress: it gets the name"


@pytest.mark.parametrize(("status", "error"), [(403, EgressRefused), (502, ConnectError)])
async def test_a_proxy_that_refuses_connect(
    kind: str, ca: trustme.CA, status: int, error: type[Exception]
) -> None:
    resolver = MapResolver({"secure.test": ["127.0.0.1"]})
    async with (
        LocalProxy(refuse=status).running() as proxy,
        open_test_transport(kind, resolver, proxies=_through(proxy)) as t,
    ):
        with pytest.raises(error):
            await t.send(post(Origin("https", "secure.test", 443, client_context(ca))), T)
    assert proxy.connects == ["127.0.0.1:443"]


async def test_proxy_credentials_are_required_when_the_proxy_asks(kind: str, ca: trustme.CA) -> None:
    resolver = MapResolver({"secure.test": ["127.0.0.1"]})
    async with (
        LocalProxy(credentials="bob:pw").running() as proxy,
        open_test_transport(kind, resolver, proxies=_through(proxy)) as t,
    ):
        with pytest.raises(ConnectError):
            await t.send(post(Origin("https", "secure.test", 443, client_context(ca))), T)
