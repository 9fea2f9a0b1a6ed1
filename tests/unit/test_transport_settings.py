"""The transport's settings, header checks, proxy routes and how transport errors become delivery errors."""

from __future__ import annotations

import pytest

from fanout.config import DeliverySettings, load_settings
from fanout.http.fields import HeaderBlock, check_field, encode_fields
from fanout.http.options import response_limits, timeouts
from fanout.http.proxy import Proxy, ProxyRoutes
from fanout.http.sender import HttpSender, delivery_error
from fanout.http.transport import (
    ConnectError,
    ConnectTimeout,
    EgressRefused,
    InvalidHeader,
    PoolTimeout,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    TLSError,
)
from fanout.model.errors import ConfigError, NotAttempted, PermanentDelivery, RetryableDelivery
from tests.unit.factories import make_sub


def test_defaults() -> None:
    d = DeliverySettings()
    assert d.transport == "fast" and d.keepalive_expiry < 5
    assert (d.max_response_header_bytes, d.max_response_body_bytes) == (65536, 1024 * 1024)
    assert d.proxy is None and not d.trust_env and not d.proxy_enforces_egress


def test_a_password_in_the_proxy_url_becomes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_DELIVERY__PROXY", "http://egress:p%40ss@proxy.corp:3128")
    d = load_settings().delivery
    assert d.proxy == "http://egress@proxy.corp:3128"
    assert d.proxy_password is not None and d.proxy_password.get_secret_value() == "p@ss"
    assert "p@ss" not in repr(d) and "p%40ss" not in repr(d)
    proxy = ProxyRoutes.configure(d.proxy, d.proxy_password.get_secret_value(), False).for_target(
        "https", "x"
    )
    assert proxy == Proxy("proxy.corp", 3128, "Basic ZWdyZXNzOnBAc3M=")  # egress:p@ss


@pytest.mark.parametrize(
    "url",
    ["https://proxy:3128", "socks5://proxy:1080", "http://proxy:3128/path", "http://:3128", "http://p:99999"],
)
def test_an_unusable_proxy_url_stops_the_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FANOUT_DELIVERY__PROXY", url)
    with pytest.raises(ConfigError, match=r"delivery\.proxy"):
        load_settings()


def test_the_transport_keeps_what_the_history_records_of_a_body_within_the_body_cap() -> None:
    d = DeliverySettings(max_response_body_bytes=1024)
    assert response_limits(d).body_prefix == 0
    assert response_limits(d, 512).body_prefix == 512 and response_limits(d, 4096).body_prefix == 1024


def test_proxy_routes_from_the_environment() -> None:
    env = {
        "HTTPS_PROXY": "proxy.corp:3128",
        "http_proxy": "http://u:pw@fwd.corp",
        "NO_PROXY": ".internal,localhost",
    }
    routes = ProxyRoutes.configure(None, None, True, env)
    assert routes.for_target("https", "api.example.com") == Proxy("proxy.corp", 3128)
    assert routes.for_target("https", "hooks.internal") is None
    assert routes.for_target("https", "localhost") is None
    forwarded = routes.for_target("http", "api.example.com")
    assert forwarded is not None and (forwarded.host, forwarded.port) == ("fwd.corp", 80)
    assert forwarded.authorization == "Basic dTpwdw=="
    assert ProxyRoutes.configure(None, None, False, env).for_target("https", "api.example.com") is None
    explicit = ProxyRoutes.configure("http://p:1", None, True, env)
    assert explicit.for_target("https", "hooks.internal") == Proxy("p", 1), "delivery.proxy takes everything"
    with pytest.raises(ConfigError, match="HTTPS_PROXY"):
        ProxyRoutes.configure(None, None, True, {"HTTPS_PROXY": "https://tls-proxy:443"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x", "a\r\nb"),
        ("x", "a\nb"),
        ("x", "a\rb"),
        ("x", "a\x00"),
        ("x", "\x7f"),
        ("x", "€"),
        ("a b", "v"),
        ("é", "v"),
    ],
)
def test_header_fields_that_cannot_go_on_the_wire(name: str, value: str) -> None:
    with pytest.raises(InvalidHeader):
        check_field(name, value)
    with pytest.raises(InvalidHeader):
        HeaderBlock.build([("ok", "fine"), (name, value)])


def test_header_fields_that_can() -> None:
    assert encode_fields([("X-A", "tab\there"), ("x-b", "café"), ("x-c", "")]) == (
        b"X-A: tab\there\r\nx-b: caf\xe9\r\nx-c: \r\n"
    )
    assert HeaderBlock.build([]) is HeaderBlock.EMPTY


def test_timeouts_from_a_subscription() -> None:
    d = DeliverySettings(connect_timeout=5, pool_timeout=2)
    t = timeouts(d, 15)
    assert (t.connect, t.read, t.pool, t.total) == (5, 15, 2, 15)
    assert timeouts(d, 1).connect == 1, "connecting never takes longer than the attempt"


@pytest.mark.parametrize(
    ("error", "becomes"),
    [
        (PoolTimeout("x"), NotAttempted),
        (EgressRefused("x"), PermanentDelivery),
        (InvalidHeader("x"), PermanentDelivery),
        (ReadTimeout("x"), RetryableDelivery),
        (ConnectTimeout("x"), RetryableDelivery),
        (ConnectError("x"), RetryableDelivery),
        (TLSError("x"), RetryableDelivery),
        (ServerDisconnected(), RetryableDelivery),
        (ResponseTooLarge("x"), RetryableDelivery),
    ],
)
def test_transport_errors_as_delivery_errors(error: Exception, becomes: type) -> None:
    result = delivery_error(error, timeouts(DeliverySettings(), 15))  # type: ignore[arg-type]
    assert type(result) is becomes
    if isinstance(error, ReadTimeout | ConnectTimeout):
        assert result.error.startswith("timeout"), "counted as a timeout in the attempt metrics"


async def test_a_subscription_header_that_cannot_go_on_the_wire_refuses_its_deliveries() -> None:
    sender = HttpSender(DeliverySettings())
    await sender.start()
    try:
        refusal = sender.refusal(make_sub(headers={"X-Tenant": "東京"}))
        assert refusal is not None and "X-Tenant" in refusal and "Latin-1" in refusal
        assert sender.refusal(make_sub(headers={"X-Tenant": "tokyo"})) is None
    finally:
        await sender.close()
