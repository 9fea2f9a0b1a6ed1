from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from fanout.http.classify import classify, retry_after_seconds
from fanout.model.errors import EndpointGone, PermanentDelivery, RetryableDelivery

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify(status, None) is None
    assert classify(status, "120") is None


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_3xx_is_retryable_and_says_redirects_are_not_followed(status: int) -> None:
    error = classify(status, None)
    assert type(error) is RetryableDelivery
    assert error.status == status
    assert "redirect" in error.error
    assert error.error.startswith(f"HTTP {status}")


def test_410_is_endpoint_gone() -> None:
    error = classify(410, None)
    assert type(error) is EndpointGone
    assert isinstance(error, PermanentDelivery)
    assert (error.status, error.error) == (410, "HTTP 410")


def test_410_stays_gone_even_if_listed_as_retryable() -> None:
    assert type(classify(410, None, retryable_statuses=[410])) is EndpointGone


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599, 600])
def test_retryable_statuses(status: int) -> None:
    error = classify(status, None)
    assert type(error) is RetryableDelivery
    assert (error.status, error.error, error.retry_after) == (status, f"HTTP {status}", None)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_carried(status: int) -> None:
    error = classify(status, "120")
    assert isinstance(error, RetryableDelivery)
    assert error.retry_after == 120.0


def test_retry_after_http_date_is_carried() -> None:
    in_90_seconds = format_datetime(datetime.fromtimestamp(time.time() + 90, UTC), usegmt=True)
    error = classify(503, in_90_seconds)
    assert isinstance(error, RetryableDelivery)
    assert error.retry_after is not None
    assert 85 <= error.retry_after <= 90


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 422, 499])
def test_other_4xx_are_permanent(status: int) -> None:
    error = classify(status, "5")
    assert type(error) is PermanentDelivery
    assert (error.status, error.error) == (status, f"HTTP {status}")


def test_listed_4xx_become_retryable_with_retry_after() -> None:
    error = classify(404, "7", retryable_statuses=[404, 409])
    assert type(error) is RetryableDelivery
    assert (error.status, error.retry_after) == (404, 7.0)
    assert type(classify(400, None, retryable_statuses=[404])) is PermanentDelivery


@pytest.mark.parametrize("status", [100, 101, 199])
def test_unexpected_statuses_are_retryable(status: int) -> None:
    error = classify(status, None)
    assert type(error) is RetryableDelivery
    assert "unexpected" in error.error


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("007", 7.0),
        ("Wed, 01 May 2024 12:00:10 GMT", 10.0),
        ("Wed, 01 May 2024 11:59:00 GMT", 0.0),  # in the past: due now
        ("Wed, 01 May 2024 14:00:00 +0200", 0.0),  # same instant, explicit offset
        (format_datetime(datetime.fromtimestamp(NOW + 3600, UTC), usegmt=True), 3600.0),
    ],
)
def test_retry_after_values(value: str, expected: float) -> None:
    assert retry_after_seconds(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-5",
        "1.5",
        "soon",
        "Wed, 01 May 2024 12:00:10",  # no zone
        "Wed, 01 May 2024 12:00:10 -0000",  # RFC 2822 "unknown zone"
        "Wed, 32 May 2024 12:00:10 GMT",
        "²",  # str.isdigit() is True for superscripts, but they are not delta-seconds
        "\uff11\uff12",  # full-width digits: not HTTP delta-seconds either
    ],
)
def test_retry_after_unusable_values_are_none(value: str | None) -> None:
    assert retry_after_seconds(value, now=NOW) is None


def test_classify_survives_a_hostile_retry_after() -> None:
    error = classify(503, "²")
    assert isinstance(error, RetryableDelivery)
    assert error.retry_after is None


def test_retry_after_uses_the_clock_by_default() -> None:
    assert retry_after_seconds("Wed, 01 May 2024 12:00:00 GMT") == 0.0  # long past
    far = retry_after_seconds("Fri, 01 Jan 2100 00:00:00 GMT")
    assert far is not None and far == pytest.approx(4102444800 - time.time(), abs=5)
