from __future__ import annotations

import pytest

from fanout.model import headers as H
from fanout.model.event import Headers


def retry_headers(**overrides: str | int | None) -> Headers:
    values: dict[str, str | int | None] = {
        H.SUBSCRIPTION: "hook-1",
        H.GROUP: "blue",
        H.ATTEMPT: 2,
        H.FIRST_ATTEMPT: 1_714_564_800_250,
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: 3,
        H.ORIGIN_OFFSET: 1234,
        H.ORIGIN_TIMESTAMP: 1_714_564_799_000,
        H.EVENT_ID: "evt_1",
        H.LAST_ERROR: "HTTP 503",
        H.NOT_BEFORE: 1_714_564_805_000,
    }
    values.update(overrides)
    return [("traceparent", b"00-abc-def-01"), ("tenant", b"acme"), *H.encode(values)]


def test_encode_renders_text_and_skips_empty_values() -> None:
    encoded = H.encode({H.ATTEMPT: 0, H.STATUS: None, H.LAST_ERROR: "", H.REASON: "circuit open"})
    assert encoded == [(H.ATTEMPT, b"0"), (H.REASON, b"circuit open")]


def test_encode_utf8() -> None:
    assert H.encode({H.LAST_ERROR: "délai dépassé"}) == [(H.LAST_ERROR, "délai dépassé".encode())]


def test_as_dict_keeps_only_fanout_headers() -> None:
    d = H.as_dict([*retry_headers(), ("fanout-status", None), ("fanout-reason", b"\xff")])
    assert d[H.SUBSCRIPTION] == "hook-1"
    assert d[H.ATTEMPT] == "2"
    assert "traceparent" not in d and "tenant" not in d
    assert H.STATUS not in d  # a header without a value
    assert d[H.REASON] == "\ufffd"
    assert H.as_dict(None) == {}


def test_original_strips_fanout_headers_and_keeps_order() -> None:
    mixed: Headers = [("a", b"1"), (H.ATTEMPT, b"3"), ("b", None), (H.REASON, b"x"), ("a", b"2")]
    assert H.original(mixed) == [("a", b"1"), ("b", None), ("a", b"2")]
    assert H.original(None) == []
    assert H.original(retry_headers()) == [("traceparent", b"00-abc-def-01"), ("tenant", b"acme")]


def test_not_before_ms() -> None:
    assert H.not_before_ms(retry_headers()) == 1_714_564_805_000
    assert H.not_before_ms([("x", b"1")]) is None
    assert H.not_before_ms(None) is None
    assert H.not_before_ms([(H.NOT_BEFORE, b"soon")]) is None
    assert H.not_before_ms([(H.NOT_BEFORE, None)]) is None
    assert H.not_before_ms([(H.NOT_BEFORE, b"")]) is None


def test_retry_meta_round_trip() -> None:
    meta = H.RetryMeta.parse(retry_headers())
    assert meta == H.RetryMeta(
        subscription="hook-1",
        group="blue",
        attempt=2,
        first_attempt=1_714_564_800.25,
        origin_topic="orders",
        origin_partition=3,
        origin_offset=1234,
        origin_timestamp=1_714_564_799.0,
        event_id="evt_1",
        last_error="HTTP 503",
    )


def test_retry_meta_optional_headers() -> None:
    optional = (H.LAST_ERROR, H.ORIGIN_TIMESTAMP, H.NOT_BEFORE, H.GROUP, H.FIRST_ATTEMPT)
    headers = [(k, v) for k, v in retry_headers() if k not in optional]
    meta = H.RetryMeta.parse(headers)
    assert meta.last_error == ""
    assert meta.origin_timestamp == 0.0
    assert meta.group is None, "written before records named their group"
    assert meta.first_attempt == 0.0  # never attempted: only spilled so far
    assert meta.received == 0.0 and meta.spilled == ""


def test_retry_meta_of_a_spill_says_why_and_since_when() -> None:
    meta = H.RetryMeta.parse(retry_headers(**{H.REASON: "rate limited", H.RECEIVED: 1_714_564_700_500}))
    assert meta.spilled == "rate limited"
    assert meta.received == 1_714_564_700.5


def test_a_retry_record_is_for_the_group_that_wrote_it_or_for_any_group_when_it_names_none() -> None:
    assert H.for_group(retry_headers(), "blue")
    assert not H.for_group(retry_headers(), "green")
    assert not H.for_group(retry_headers(), "blu"), "the whole name, not a prefix"
    assert not H.for_group(retry_headers(**{H.GROUP: "blue-2"}), "blue")
    assert H.for_group([(k, v) for k, v in retry_headers() if k != H.GROUP], "green")
    assert H.for_group(None, "green")
    assert not H.for_group([(H.GROUP, None)], "green"), "an empty group header is nobody's group"
    assert not H.for_group([("Fanout-Group", b"green"), (H.GROUP, b"blue")], "green")


@pytest.mark.parametrize(
    "missing",
    [
        H.SUBSCRIPTION,
        H.ATTEMPT,
        H.ORIGIN_TOPIC,
        H.ORIGIN_PARTITION,
        H.ORIGIN_OFFSET,
        H.EVENT_ID,
    ],
)
def test_retry_meta_names_the_missing_header(missing: str) -> None:
    headers = [(k, v) for k, v in retry_headers() if k != missing]
    with pytest.raises(ValueError, match=f"without header {missing}$"):
        H.RetryMeta.parse(headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (H.ATTEMPT, "two"),
        (H.ORIGIN_PARTITION, "3.5"),
        (H.FIRST_ATTEMPT, "9" * 400),  # too large for a float: still a ValueError
        (H.ORIGIN_TIMESTAMP, "9" * 400),
    ],
)
def test_retry_meta_malformed_header(header: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"malformed header {header}:"):
        H.RetryMeta.parse(retry_headers(**{header: value}))


def test_retry_meta_ignores_a_source_header_posing_as_fanout_ones() -> None:
    """Only fanout's own keys count: a source header 'Fanout-Attempt' is not 'fanout-attempt'."""
    headers = [("Fanout-Attempt", b"99"), *retry_headers()]
    assert H.RetryMeta.parse(headers).attempt == 2


def test_split_is_as_dict_and_original_in_one_pass() -> None:
    headers: Headers = [
        ("traceparent", b"00-abc-def-01"),
        ("Fanout-Attempt", b"99"),
        ("empty", None),
        ("fanout-none", None),
        *retry_headers(**{H.NOT_BEFORE: 1_714_564_801_000}),
        ("fanout-bad-utf8", b"\xff"),
    ]
    fields, own = H.split(headers)
    assert fields == H.as_dict(headers) and own == H.original(headers)
    assert H.RetryMeta.of(fields) == H.RetryMeta.parse(headers)
    assert H.not_before_of(fields) == H.not_before_ms(headers) == 1_714_564_801_000
    assert H.not_before_of(H.split(retry_headers(**{H.NOT_BEFORE: "soon"}))[0]) is None
    assert H.not_before_of({}) is None
