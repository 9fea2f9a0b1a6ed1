"""The attempt record contract: what the codec writes validates against schemas/attempt.schema.json,
round-trips, stays within its bounds, and what it reads from the topic never crashes it."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.config import HISTORY_MAX_BODY_BYTES
from fanout.history import record as R
from fanout.history.codec import MalformedRecord, checked, decode, encode, to_json
from fanout.history.record import AttemptRecord, Body, Failure, Outcome
from tests.history_records import SCHEMA, VALIDATOR, make, records


def test_the_schema_is_versioned_like_the_others() -> None:
    assert SCHEMA["$id"] == "urn:fanout:schema:attempt:v1"
    assert SCHEMA["properties"]["version"] == {
        "const": R.SCHEMA_VERSION,
        "description": "The record's schema version.",
    }
    assert set(SCHEMA["required"]) == set(SCHEMA["properties"])


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_record_of_every_outcome_validates_and_round_trips(outcome: Outcome) -> None:
    record = make(outcome)
    data = orjson.loads(encode(record))
    VALIDATOR.validate(data)
    assert data["outcome"] == outcome.value
    assert decode(encode(record)) == record


def test_an_attempted_dead_letter_carries_its_status_and_error() -> None:
    data = to_json(make(Outcome.DEAD_LETTERED, status=500))
    assert data["response"]["status"] == 500
    assert data["error"] == {"class": "HTTPStatus", "message": "HTTP 500"}
    assert data["request"] is not None and data["reason"] == "retries exhausted"


@settings(max_examples=300, deadline=None)
@given(records)
def test_every_encoded_record_validates_and_decodes_to_itself_within_bounds(record: AttemptRecord) -> None:
    data = orjson.loads(encode(record))
    VALIDATOR.validate(data)
    back = decode(encode(record))
    assert back.event_id == record.event_id[: R.MAX_ID]
    assert back.subscription == record.subscription[: R.MAX_SUBSCRIPTION]
    assert back.reason == (None if record.reason is None else record.reason[: R.MAX_REASON])
    assert back.member == (None if record.member is None else record.member[: R.MAX_MEMBER])
    assert back.payload == record.payload
    assert back.response is None or back.response.body == record.response.body  # type: ignore[union-attr]
    if (
        record.trace_id is not None
        and len(record.trace_id) == 32
        and set(record.trace_id) <= set("0123456789abcdef")
    ):
        assert back.trace_id == record.trace_id
    else:
        assert back.trace_id is None


def test_long_strings_are_cut_to_their_bounds_on_encode() -> None:
    record = make(
        Outcome.RETRY_SCHEDULED,
        event_id="e" * 1000,
        subscription="s" * 1000,
        error=Failure("C" * 1000, "m" * 10_000),
        reason="r" * 10_000,
        member="m" * 10_000,
        event_type="t" * 1000,
    )
    data = to_json(record)
    VALIDATOR.validate(data)
    assert len(data["event_id"]) == R.MAX_ID and len(data["subscription"]) == R.MAX_SUBSCRIPTION
    assert len(data["error"]["class"]) == R.MAX_ERROR_CLASS
    assert len(data["error"]["message"]) == R.MAX_ERROR_MESSAGE
    assert len(data["reason"]) == R.MAX_REASON and len(data["member"]) == R.MAX_MEMBER
    assert len(data["event_type"]) == R.MAX_TYPE


def test_nothing_secret_is_in_the_record() -> None:
    """The record has no field for request headers, a body or a signature, and the schema forbids others."""
    data = to_json(make())
    assert set(data["request"]) == {"webhook_id", "webhook_timestamp", "latency_ms"}
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["properties"]["request"]["oneOf"][1]["additionalProperties"] is False


# -- bodies --------------------------------------------------------------------------------------------


def test_a_utf8_body_is_kept_as_text() -> None:
    assert Body.of('{"ok": "✓"}'.encode(), 1024) == Body('{"ok": "✓"}', "utf-8", 13, False)


def test_a_cut_through_a_character_drops_the_partial_character() -> None:
    body = Body.of("ab✓".encode(), 3)  # ✓ is 3 bytes: the cut leaves one of them
    assert body == Body("ab", "utf-8", 5, True)


def test_binary_is_kept_as_base64_and_its_bytes_survive() -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    body = Body.of(data, 100)
    assert body is not None and body.encoding == "base64" and body.truncated and body.size == 264
    assert base64.b64decode(body.text) == data[:100] == body.raw()


def test_invalid_utf8_before_the_cut_is_binary_not_text() -> None:
    body = Body.of(b"ok\xffmore text", 5)
    assert body is not None and body.encoding == "base64" and body.raw() == b"ok\xffmo"


def test_zero_bytes_keeps_no_body_and_the_limit_is_capped() -> None:
    assert Body.of(b"anything", 0) is None
    big = Body.of(b"x" * (R.MAX_BODY_BYTES + 10), 10**9)
    assert big is not None and len(big.text) == R.MAX_BODY_BYTES and big.truncated


def test_the_settings_bound_is_the_records_bound() -> None:
    assert HISTORY_MAX_BODY_BYTES == R.MAX_BODY_BYTES
    assert SCHEMA["$defs"]["body"]["oneOf"][1]["properties"]["text"]["maxLength"] == R.MAX_BODY_CHARS


@given(st.binary(max_size=300), st.integers(1, 400))
def test_a_body_is_always_a_prefix_of_the_bytes(data: bytes, limit: int) -> None:
    body = Body.of(data, limit)
    assert body is not None
    assert data.startswith(body.raw()) and len(body.raw()) <= limit
    assert body.truncated == (len(data) > len(body.raw())) or body.encoding == "utf-8"
    assert body.size == len(data)


# -- decoding what the topic holds ---------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return to_json(make(Outcome.RETRY_SCHEDULED))


def _with(path: str, value: Any) -> bytes:
    data = _valid()
    target = data
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = value
    return json.dumps(data).encode()


def _without(key: str) -> bytes:
    data = _valid()
    del data[key]
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b"x" * (1024 * 1024 + 1), "larger than"),
        (_with("version", 2), "version"),
        (_with("version", True), "version"),
        (_with("version", "1"), "version"),
        (_without("version"), "version"),
        (_with("outcome", "exploded"), "outcome"),
        (_with("outcome", None), "outcome"),
        (_with("event_id", ""), "event_id"),
        (_with("event_id", 12), "event_id"),
        (_with("event_id", "e" * 257), "event_id"),
        (_with("subscription", ["a"]), "subscription"),
        (_with("time_ms", -1), "time_ms"),
        (_with("time_ms", 1.5), "time_ms"),
        (_with("time_ms", 2**70), "time_ms"),
        (_with("attempt", False), "attempt"),
        (_with("event_type", None), "event_type"),
        (_with("reason", "r" * 501), "reason"),
        (_with("trace_id", "XYZ"), "trace_id"),
        (_with("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736"), "trace_id"),
        (_with("request", "yes"), "request"),
        (_with("request.latency_ms", -1), "latency_ms"),
        (_with("request.latency_ms", "fast"), "latency_ms"),
        (_with("request.webhook_timestamp", None), "webhook_timestamp"),
        (_with("response.status", 99), "status"),
        (_with("response.status", "200"), "status"),
        (_with("response.body.encoding", "rot13"), "encoding"),
        (_with("response.body.truncated", "no"), "truncated"),
        (_with("response.body.text", "x" * (R.MAX_BODY_CHARS + 1)), "text"),
        (_with("origin.partition", -1), "partition"),
        (_with("retry.tier", 1001), "tier"),
        (_with("error", {"class": "X"}), "message"),
        (_without("payload"), "payload"),
    ],
)
def test_a_value_that_is_not_a_record_is_refused_with_its_problem(value: bytes | None, problem: str) -> None:
    with pytest.raises(MalformedRecord, match=problem):
        decode(value)


def test_fields_it_does_not_know_are_ignored() -> None:
    data = {**_valid(), "added_in_a_later_minor_version": {"x": 1}}
    assert decode(orjson.dumps(data)) == make(Outcome.RETRY_SCHEDULED)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_either_decode_or_raise_malformed(value: bytes) -> None:
    with contextlib.suppress(MalformedRecord):
        decode(value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_paths = [
    "version", "event_id", "event_type", "event_time_ms", "subscription", "attempt", "time_ms", "outcome",
    "retry", "retry.tier", "retry.not_before_ms", "reason", "request", "request.webhook_id",
    "request.webhook_timestamp", "request.latency_ms", "response", "response.status", "response.content_type",
    "response.body", "response.body.text", "response.body.encoding", "response.body.size",
    "response.body.truncated", "error", "error.class", "error.message", "origin", "origin.topic",
    "origin.partition", "origin.offset", "origin.timestamp_ms", "trace_id", "member", "payload",
]  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_paths), _json)
def test_what_the_decoder_accepts_the_schema_accepts(path: str, value: Any) -> None:
    """Any field of a valid record replaced by any JSON value: the decoder accepts it only if the
    schema does (it may be stricter: 1.0 is a JSON Schema integer, not a decoder's)."""
    data = _valid()
    data["response"]["body"] = {"text": "x", "encoding": "utf-8", "size": 1, "truncated": False}
    target = data
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = value
    encoded = json.dumps(data).encode()
    try:
        record = decode(encoded)
    except MalformedRecord:
        return
    VALIDATOR.validate(orjson.loads(encoded))
    VALIDATOR.validate(to_json(record))


def test_checked_leaves_the_parsed_object_for_ingest() -> None:
    obj = checked(encode(make()))
    assert obj["event_id"] == "evt-1" and obj["request"]["latency_ms"] == 12.5


def test_records_are_immutable_values() -> None:
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.attempt = 2  # type: ignore[misc]
