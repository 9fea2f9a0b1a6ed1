from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from fanout.model.event import Event, iso_time
from tests.unit.factories import make_delivery, make_event


def test_standard_payload_is_the_envelope() -> None:
    event = make_event(type="order.created", time_=1714564800.5)
    event.data = {"total": 5}
    event.data_parsed = True
    body = orjson.loads(event.payload("standard"))
    assert body == {
        "id": event.id,
        "type": "order.created",
        "timestamp": "2024-05-01T12:00:00.500Z",
        "data": {"total": 5},
    }


def test_standard_payload_timestamp_is_utc_iso8601_with_z() -> None:
    stamp = orjson.loads(make_event(time_=0.0).payload("standard"))["timestamp"]
    assert stamp == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso_time(time.time()))


def _datetime_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(
    st.floats(min_value=-62135596800 + 86400, max_value=253402300799.0, allow_nan=False),
    st.sampled_from([0.0, 0.0005, 0.0004995, 0.9995, 0.9999995, 0.0000005, 0.4999995, -0.9999996]),
)
@example(1.9999996, 0.0)
@example(253402300799.9994, 0.0)
@example(-0.0000004, 0.0)
def test_iso_time_renders_exactly_as_datetime(whole: float, frac: float) -> None:
    """iso_time keeps the seconds part between calls: every time, including the half-microsecond roundings
    that carry into the next second and times before 1970, renders as datetime renders it."""
    for epoch in (whole, float(int(whole)) + frac):
        try:
            expected = _datetime_iso(epoch)
        except (OverflowError, ValueError, OSError) as exc:
            expected = type(exc).__name__
        try:
            got = iso_time(epoch)
        except (OverflowError, ValueError, OSError) as exc:
            got = type(exc).__name__
        assert got == expected, epoch


def test_standard_payload_parses_unparsed_data_lazily() -> None:
    event = make_event(value=b'{"a": [1, 2]}')
    assert not event.data_parsed
    assert orjson.loads(event.payload("standard"))["data"] == {"a": [1, 2]}
    assert event.data_parsed and event.data == {"a": [1, 2]}


def test_standard_payload_of_non_json_value_carries_the_text() -> None:
    event = make_event(value=b"caf\xc3\xa9 \xff")
    assert orjson.loads(event.payload("standard"))["data"] == "café \ufffd"


def test_raw_payload_is_the_exact_record_bytes() -> None:
    value = b'{"event":"a",  "data": {"spacing": "kept"}}\n'
    event = make_event(value=value)
    event.data, event.data_parsed = {"other": "thing"}, True
    assert event.payload("raw") is value


def test_payload_is_serialised_once_per_mode() -> None:
    event: Event = make_event()
    standard = event.payload("standard")
    event.data = {"changed": True}  # a second serialisation would show this
    assert event.payload("standard") is standard
    raw = event.payload("raw")
    assert event.payload("raw") is raw
    assert standard != raw


def test_delivery_age_counts_from_first_attempt() -> None:
    delivery = make_delivery(first_attempt=time.time() - 100)
    assert 100 <= delivery.age < 110
