from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.model.errors import PoisonRecord
from fanout.model.event import Event
from fanout.pipeline.decode import MAX_TYPE_LENGTH, decode, derived_id, parse_time

RECORD_TIME = 1_700_000_000.0


def dec(value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None, **kw: Any) -> Event:
    args: dict[str, Any] = {"topic": "orders", "partition": 2, "offset": 41, "key": b"key-1"}
    args.update(kw)
    return decode(
        args["topic"],
        args["partition"],
        args["offset"],
        args["key"],
        value,
        headers,
        RECORD_TIME,
        event_id=args.get("event_id"),
    )


# -- the simple shape ------------------------------------------------------------------------------


def test_simple_shape_with_id_and_timestamp() -> None:
    value = orjson.dumps(
        {"event": "user.created", "data": {"name": "ada"}, "id": "e-1", "timestamp": "2024-05-01T12:00:00Z"}
    )
    event = dec(value, [("tenant", b"acme")])
    assert event.type == "user.created"
    assert event.id == "e-1"
    assert event.data == {"name": "ada"}
    assert event.data_parsed
    assert event.time == 1714564800.0
    assert (event.topic, event.partition, event.offset, event.key) == ("orders", 2, 41, b"key-1")
    assert event.value == value
    assert event.attributes == {"tenant": "acme"}
    assert event.headers == [("tenant", b"acme")]


def test_simple_shape_minimal_falls_back_to_record_time_and_derived_id() -> None:
    event = dec(b'{"event": "user_registered", "data": {"a": 1}}')
    assert event.type == "user_registered"
    assert event.time == RECORD_TIME
    assert event.id == derived_id("orders", 2, 41)
    assert event.attributes == {}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1714564800, 1714564800.0),  # epoch seconds
        (1714564800123, 1714564800.123),  # epoch milliseconds
        ("2024-05-01T12:00:00+02:00", 1714557600.0),
        ("2024-05-01T12:00:00", RECORD_TIME),  # no zone: ambiguous, so the record time
        ("yesterday", RECORD_TIME),
        (True, RECORD_TIME),
        (None, RECORD_TIME),
        ([1], RECORD_TIME),
    ],
)
def test_simple_shape_timestamps(timestamp: Any, expected: float) -> None:
    event = dec(orjson.dumps({"event": "a", "timestamp": timestamp}))
    assert event.time == pytest.approx(expected)


def test_integer_id_is_kept_as_text() -> None:
    assert dec(b'{"event": "a", "id": 17}').id == "17"


def test_empty_id_gets_a_derived_one() -> None:
    assert dec(b'{"event": "a", "id": ""}').id == derived_id("orders", 2, 41)


def test_explicit_event_id_wins_over_everything() -> None:
    """Retry records pass the original id: it must survive whatever the body says."""
    assert dec(b'{"event": "a", "id": "from-body"}', event_id="evt_original").id == "evt_original"
    headers: list[tuple[str, bytes | None]] = [("ce_type", b"a"), ("ce_id", b"from-header")]
    assert dec(b"x", headers, event_id="evt_original").id == "evt_original"


def test_content_type_comes_from_the_kafka_header() -> None:
    event = dec(b'{"event": "a"}', [("Content-Type", b"application/vnd.acme+json")])
    assert event.content_type == "application/vnd.acme+json"
    assert dec(b'{"event": "a"}').content_type == "application/json"


# -- CloudEvents structured mode ---------------------------------------------------------------------


def test_cloudevents_structured_json() -> None:
    value = orjson.dumps(
        {
            "specversion": "1.0",
            "type": "com.acme.order.created",
            "id": "ce-7",
            "source": "/orders",
            "subject": "o-1",
            "time": "2024-05-01T12:00:00Z",
            "tenant": "acme",
            "priority": 3,  # not a string: not an attribute filters can match
            "datacontenttype": "application/json",
            "data": {"total": 5},
        }
    )
    event = dec(value, [("region", b"eu")])
    assert event.type == "com.acme.order.created"
    assert event.id == "ce-7"
    assert event.time == 1714564800.0
    assert event.data == {"total": 5}
    assert event.attributes == {"source": "/orders", "subject": "o-1", "tenant": "acme", "region": "eu"}


def test_cloudevents_structured_uses_time_not_timestamp() -> None:
    value = orjson.dumps({"specversion": "1.0", "type": "a", "timestamp": "2024-05-01T12:00:00Z"})
    assert dec(value).time == RECORD_TIME


def test_cloudevents_structured_data_base64() -> None:
    value = orjson.dumps({"specversion": "1.0", "type": "a", "data_base64": "aGVsbG8="})
    assert dec(value).data == "aGVsbG8="


def test_cloudevents_structured_without_type_is_poison() -> None:
    with pytest.raises(PoisonRecord, match="CloudEvents attribute 'type'"):
        dec(b'{"specversion": "1.0", "event": "a"}')


# -- CloudEvents binary mode (Kafka headers) ---------------------------------------------------------


BINARY_HEADERS: list[tuple[str, bytes | None]] = [
    ("ce_specversion", b"1.0"),
    ("ce_type", b"com.acme.user.created"),
    ("ce_id", b"bin-1"),
    ("ce_source", b"/users"),
    ("ce_time", b"2024-05-01T12:00:00Z"),
    ("ce_tenant", b"acme"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


def test_binary_mode_takes_attributes_from_headers() -> None:
    event = dec(b'{"name": "ada"}', BINARY_HEADERS)
    assert event.type == "com.acme.user.created"
    assert event.id == "bin-1"
    assert event.time == 1714564800.0
    assert event.attributes["source"] == "/users"
    assert event.attributes["tenant"] == "acme"  # extension attribute ce_tenant
    assert event.attributes["traceparent"].startswith("00-")  # plain Kafka headers too
    assert event.headers == BINARY_HEADERS


def test_binary_mode_needs_no_json_parse() -> None:
    """The value is not JSON at all, yet the record decodes: routing used only the headers."""
    event = dec(b"plain text, not JSON {", BINARY_HEADERS)
    assert event.type == "com.acme.user.created"
    assert not event.data_parsed
    assert event.data is None
    envelope = orjson.loads(event.payload("standard"))
    assert envelope["data"] == "plain text, not JSON {"
    assert event.payload("raw") == b"plain text, not JSON {"


def test_binary_mode_parses_json_data_lazily() -> None:
    event = dec(b'{"name": "ada"}', BINARY_HEADERS)
    assert event.data is None
    assert orjson.loads(event.payload("standard"))["data"] == {"name": "ada"}
    assert event.data == {"name": "ada"}


def test_binary_mode_with_empty_value_is_not_poison() -> None:
    event = dec(None, [("ce_type", b"ping")])
    assert event.type == "ping"
    assert event.value == b""
    assert orjson.loads(event.payload("standard"))["data"] is None


def test_binary_mode_without_id_or_time() -> None:
    event = dec(b"{}", [("ce_type", b"a"), ("ce_time", b"not a time")])
    assert event.id == derived_id("orders", 2, 41)
    assert event.time == RECORD_TIME


def test_binary_mode_content_type() -> None:
    headers: list[tuple[str, bytes | None]] = [("ce_type", b"a"), ("ce_datacontenttype", b"text/csv")]
    assert dec(b"a,b", headers).content_type == "text/csv"
    assert dec(b"a,b", [("ce_type", b"a"), ("content-type", b"text/plain")]).content_type == "text/plain"


def test_binary_mode_empty_type_is_poison() -> None:
    with pytest.raises(PoisonRecord, match="ce_type"):
        dec(b"{}", [("ce_type", b"")])


def test_header_without_value_decodes_as_empty_text() -> None:
    event = dec(b'{"event": "a"}', [("flag", None)])
    assert event.attributes == {"flag": ""}


def test_header_names_are_lower_cased_for_filters() -> None:
    assert dec(b'{"event": "a"}', [("Tenant", b"acme")]).attributes == {"tenant": "acme"}


# -- derived ids ---------------------------------------------------------------------------------


def test_derived_ids_are_deterministic() -> None:
    assert derived_id("orders", 0, 5) == derived_id("orders", 0, 5)
    assert re.fullmatch(r"evt_[0-9a-f]{24}", derived_id("orders", 0, 5))
    assert dec(b'{"event": "a"}').id == dec(b'{"event": "b"}').id  # same coordinates


def test_derived_ids_differ_by_coordinates() -> None:
    ids = {
        derived_id("orders", 0, 5),
        derived_id("orders", 0, 6),
        derived_id("orders", 1, 5),
        derived_id("payments", 0, 5),
        derived_id("orders", 0, 50),
        derived_id("orders0", 0, 5),
    }
    assert len(ids) == 6
    assert dec(b'{"event": "a"}', offset=1).id != dec(b'{"event": "a"}', offset=2).id


# -- poison --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"event": "a"', "not valid JSON"),
        (b"[1, 2]", "JSON is a list"),
        (b'"text"', "JSON is a str"),
        (b"42", "JSON is a int"),
        (b'{"data": {}}', "field 'event'"),
        (b'{"event": ""}', "field 'event'"),
        (b'{"event": 5}', "field 'event'"),
        (b'{"event": null}', "field 'event'"),
        (b"", "empty record"),
        (None, "empty record"),
        (b'{"event": "a", "id": {"x": 1}}', "'id'"),
        (b'{"event": "a", "id": 1.5}', "'id'"),
    ],
)
def test_poison_records(value: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonRecord) as caught:
        dec(value)
    assert reason in caught.value.reason


@pytest.mark.parametrize("bad_id", ["a\r\nX-Injected: 1", "a\nb", "nul\x00", "del\x7f"])
def test_an_id_that_cannot_be_a_header_is_poison(bad_id: str) -> None:
    """The id is sent as ``webhook-id``: one with control characters could never be delivered."""
    with pytest.raises(PoisonRecord, match="control character"):
        dec(orjson.dumps({"event": "a", "id": bad_id}))
    with pytest.raises(PoisonRecord, match="control character"):
        dec(b"{}", [("ce_type", b"a"), ("ce_id", bad_id.encode())])


def test_an_id_with_a_tab_or_unicode_is_fine() -> None:
    assert dec(orjson.dumps({"event": "a", "id": "caf\u00e9\tx"})).id == "caf\u00e9\tx"


def test_overlong_type_is_poison() -> None:
    assert dec(orjson.dumps({"event": "a" * MAX_TYPE_LENGTH})).type == "a" * MAX_TYPE_LENGTH
    with pytest.raises(PoisonRecord, match="longer than"):
        dec(orjson.dumps({"event": "a" * (MAX_TYPE_LENGTH + 1)}))


def test_empty_value_with_unrelated_headers_is_poison() -> None:
    with pytest.raises(PoisonRecord, match="empty record"):
        dec(b"", [("ce_source", b"/x"), ("tenant", b"acme")])


# -- times that cannot be rendered ---------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp", [1e300, -1e300, 1e20, -1e12, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"]
)
def test_out_of_range_times_fall_back_to_the_record_time(timestamp: Any) -> None:
    """The envelope renders the time as ISO 8601: a time datetime cannot hold must not reach it."""
    event = dec(orjson.dumps({"event": "a", "timestamp": timestamp}))
    assert event.time == RECORD_TIME
    assert orjson.loads(event.payload("standard"))["timestamp"] == "2023-11-14T22:13:20.000Z"


def test_parse_time_keeps_the_extremes_that_render() -> None:
    assert parse_time("0001-01-01T00:00:00Z", 0.0) == -62135596800.0
    assert parse_time("9999-12-31T23:59:59Z", 0.0) == 253402300799.0


# -- properties ----------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
offsets_from_utc = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
times = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.datetimes(timezones=offsets_from_utc.map(timezone)).map(datetime.isoformat)
    | json_values
)
texts = st.text(max_size=12)
optional_fields = {
    "specversion": st.just("1.0"),
    "id": texts | st.integers() | json_values,
    "timestamp": times,
    "time": times,
    "data": json_values,
    "data_base64": texts,
    "tenant": texts | json_values,
}
# Mostly well-formed envelopes (so the property reaches payload rendering), and arbitrary ones.
envelopes = st.fixed_dictionaries(
    {"event": st.text(min_size=1, max_size=12), "type": st.text(min_size=1, max_size=12)},
    optional=optional_fields,
) | st.fixed_dictionaries({}, optional={"event": json_values, "type": json_values, **optional_fields})
record_values = st.none() | st.binary(max_size=64) | envelopes.map(lambda d: json.dumps(d).encode())
header_lists = st.lists(
    st.tuples(
        st.sampled_from(["ce_type", "ce_id", "ce_time", "ce_tenant", "content-type", "tenant", "x"])
        | st.text(max_size=8),
        st.none() | st.binary(max_size=16),
    ),
    max_size=4,
)


@given(value=st.binary(max_size=256))
def test_decode_of_arbitrary_bytes_raises_only_poison(value: bytes) -> None:
    try:
        event = decode("t", 0, 0, None, value, None, RECORD_TIME)
    except PoisonRecord as poison:
        assert poison.reason
    else:
        assert event.type


@settings(max_examples=500)
@given(value=record_values, headers=header_lists, offset=st.integers(0, 2**62))
def test_decoded_events_always_render(
    value: bytes | None, headers: list[tuple[str, bytes | None]], offset: int
) -> None:
    """Anything decode accepts can be rendered in both payload modes; anything else is PoisonRecord."""
    try:
        event = decode("t", 0, offset, None, value, headers, RECORD_TIME)
    except PoisonRecord as poison:
        assert poison.reason
        return
    assert event.type and event.id
    assert orjson.loads(event.payload("standard"))["type"] == event.type
    assert event.payload("raw") == (value or b"")
