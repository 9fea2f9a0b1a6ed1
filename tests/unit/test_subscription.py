from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from fanout.model.errors import ValidationFailed
from fanout.model.subscription import Subscription, parse_subscription
from tests.unit.factories import KEY, OTHER_KEY, OTHER_SECRET, SECRET, sub_data


def failure(**overrides: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        parse_subscription(sub_data(**overrides))
    return caught.value


def test_minimal_subscription_gets_the_defaults() -> None:
    sub = parse_subscription(sub_data())
    assert isinstance(sub, Subscription)
    assert sub.id == "hook-1"
    assert sub.topics == ["orders"]
    assert sub.events == ["*"]
    assert sub.filter == {}
    assert sub.enabled and sub.version == 0
    assert sub.rate_limit is None
    assert sub.max_in_flight == 32
    assert sub.timeout == 15.0
    assert sub.payload == "standard" and sub.ordering == "none"
    assert sub.retry.schedule is None and sub.retry.retryable_statuses == []
    assert sub.host == "hooks.example.com"


def test_full_subscription() -> None:
    sub = parse_subscription(
        sub_data(
            topics=["orders", "payments", "orders"],
            events=["order.created", "payment.*", "*"],
            filter={"tenant": "acme"},
            secrets=[SECRET, OTHER_SECRET],
            headers={"Authorization": "Bearer x", "X-Team": "billing"},
            rate_limit={"per_second": 2.5, "burst": 10},
            retry={"schedule": [1, 10], "max_age": 3600, "retryable_statuses": [404, 409]},
            payload="raw",
            max_in_flight=4,
        )
    )
    assert sub.topics == ["orders", "payments"]  # de-duplicated and sorted
    assert sub.rate_limit is not None and (sub.rate_limit.per_second, sub.rate_limit.burst) == (2.5, 10)
    assert sub.retry.schedule == [1, 10] and sub.retry.max_age == 3600
    assert sub.signing_keys == (KEY, OTHER_KEY)


def test_subscriptions_are_immutable() -> None:
    sub = parse_subscription(sub_data())
    with pytest.raises(ValueError):
        sub.url = "https://elsewhere.example.com"  # type: ignore[misc]


def test_signing_keys_decode_the_secrets() -> None:
    assert parse_subscription(sub_data()).signing_keys == (KEY,)


def test_public_never_shows_secrets() -> None:
    sub = parse_subscription(sub_data(secrets=[SECRET, OTHER_SECRET]))
    public = sub.public()
    assert "secrets" not in public
    text = json.dumps(public)
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in text
        assert secret[len("whsec_") :] not in text
    assert public["id"] == "hook-1" and public["url"] == sub.url


def test_repr_never_shows_secrets() -> None:
    """A subscription in a log line or a traceback must not leak its signing secrets."""
    sub = parse_subscription(sub_data(secrets=[SECRET]))
    assert SECRET not in repr(sub)
    assert SECRET not in str(sub)


def test_document_keeps_secrets_for_the_subscriptions_topic() -> None:
    doc = parse_subscription(sub_data()).document()
    assert doc["secrets"] == [SECRET]
    assert parse_subscription(doc) == parse_subscription(sub_data())


# -- errors name the subscription and the field --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "where", "words"),
    [
        ({"rate_limit": {"per_second": 0}}, "hook-1.rate_limit.per_second", "greater than 0"),
        ({"rate_limit": {"per_second": 1, "burst": 0}}, "hook-1.rate_limit.burst", "greater than or equal"),
        ({"url": "ftp://hooks.example.com"}, "hook-1.url", "http"),
        ({"url": "https://"}, "hook-1.url", "no host"),
        ({"url": "https://user:pw@hooks.example.com/"}, "hook-1.url", "credentials"),
        ({"events": ["user*"]}, "hook-1.events", "'user*'"),
        ({"events": ["*.created"]}, "hook-1.events", "'*.created'"),
        ({"events": []}, "hook-1.events", "at least 1"),
        ({"topics": []}, "hook-1.topics", "at least 1"),
        ({"topics": ["bad topic"]}, "hook-1.topics", "not a valid Kafka topic name"),
        ({"topics": ["a" * 250]}, "hook-1.topics", "not a valid Kafka topic name"),
        ({"secrets": []}, "hook-1", "needs a signing secret"),
        ({"filter_expr": "data.amount >"}, "hook-1.filter_expr", "line 1, column 14: Syntax error"),
        ({"filter_expr": "1 + 1"}, "hook-1.filter_expr", "must be a boolean expression, not int"),
        ({"transform": '{"a":\n dta.x}'}, "hook-1.transform", "line 2, column"),
        ({"transform": "data", "payload": "raw"}, "hook-1", "payload 'raw'"),
        ({"ed25519_keys": ["whsk_abc"]}, "hook-1.ed25519_keys", "Ed25519 key 0"),
        ({"ed25519_keys": ["whsec_" + "A" * 44]}, "hook-1.ed25519_keys", "must start with whsk_"),
        ({"max_in_flight": 0}, "hook-1.max_in_flight", "greater than or equal to 1"),
        ({"timeout": 0}, "hook-1.timeout", "greater than 0"),
        ({"payload": "xml"}, "hook-1.payload", "'standard' or 'raw'"),
        ({"retry": {"schedule": [1, -1]}}, "hook-1.retry.schedule", "non-negative"),
        ({"retry": {"retryable_statuses": [410]}}, "hook-1.retry.retryable_statuses", "410"),
        ({"retry": {"retryable_statuses": [503]}}, "hook-1.retry.retryable_statuses", "4xx"),
        ({"surprise": True}, "hook-1.surprise", "Extra inputs are not permitted"),
        ({"rate_limit": {"per_second": 1, "brust": 2}}, "hook-1.rate_limit.brust", "Extra inputs"),
    ],
)
def test_errors_name_the_subscription_and_the_field(
    overrides: dict[str, Any], where: str, words: str
) -> None:
    error = failure(**overrides)
    assert error.where == where
    assert words in error.message
    assert str(error).startswith(f"{where}: ")


def test_error_without_id_uses_the_default_id() -> None:
    data = sub_data()
    del data["id"]
    with pytest.raises(ValidationFailed) as caught:
        parse_subscription(data, default_id="from-key")
    assert caught.value.where == "from-key.id"


def test_bad_id_is_refused() -> None:
    assert failure(id="has space").where == "has space.id"
    assert failure(id="-leading-dash").where == "-leading-dash.id"


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "words"),
    [
        (base64.b64encode(KEY).decode(), "must start with whsec_"),
        ("whsec_not*base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(KEY).decode()[:-1], "not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "24 to 64 bytes, not 23"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes, not 65"),
        ("whsec_", "24 to 64 bytes, not 0"),
    ],
)
def test_bad_secrets(secret: str, words: str) -> None:
    error = failure(secrets=[SECRET, secret])
    assert error.where == "hook-1.secrets"
    assert words in error.message
    assert "secret 1" in error.message


def test_secret_errors_do_not_echo_the_secret() -> None:
    bad = "whsec_" + base64.b64encode(b"s" * 23).decode()
    error = failure(secrets=[bad])
    assert bad not in str(error) and bad[6:] not in str(error)


def test_too_many_secrets() -> None:
    assert failure(secrets=[SECRET] * 11).where == "hook-1.secrets"


# -- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad Header", "x:y", "", "é", "x\ny"])
def test_bad_header_names(name: str) -> None:
    error = failure(headers={name: "v"})
    assert error.where == "hook-1.headers"
    assert "not a valid header name" in error.message


@pytest.mark.parametrize(
    "name",
    ["webhook-signature", "Webhook-Signature", "webhook-id", "webhook-timestamp", "Host", "content-length"],
)
def test_headers_fanout_sets_cannot_be_overridden(name: str) -> None:
    error = failure(headers={name: "forged"})
    assert error.where == "hook-1.headers"
    assert "cannot be overridden" in error.message


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb", "nul\x00", "bell\x07", "del\x7f"])
def test_header_values_without_control_characters(value: str) -> None:
    """aiohttp refuses to send these: accepting them would make every delivery fail."""
    error = failure(headers={"X-Ok": value})
    assert error.where == "hook-1.headers"
    assert "control character" in error.message


def test_header_values_may_hold_tabs_and_unicode() -> None:
    sub = parse_subscription(sub_data(headers={"X-Ok": "a\tb", "X-Name": "café"}))
    assert sub.headers == {"X-Ok": "a\tb", "X-Name": "café"}


@pytest.mark.parametrize("pattern", ["user.created", "user.*", "*", "a.b.c.*", "com.acme:order/v1", "a_b-c"])
def test_good_event_patterns(pattern: str) -> None:
    assert parse_subscription(sub_data(events=[pattern])).events == [pattern]


@pytest.mark.parametrize("pattern", ["", "user.", ".user", "user..created", "us er", "user.*.x", "**"])
def test_bad_event_patterns(pattern: str) -> None:
    assert failure(events=[pattern]).where == "hook-1.events"


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/hook", "https://[2606:4700::1]/x", "https://h.example/"]
)
def test_good_urls(url: str) -> None:
    assert parse_subscription(sub_data(url=url)).url == url
