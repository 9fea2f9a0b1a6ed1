"""The syntax checks for values that reach subscribers' request headers (W3C Trace Context, RFC 9110
media types), and ``decode`` dropping and counting the invalid ones from every place they come from."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.model import wire_syntax
from fanout.pipeline.decode import decode

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INJECTED = "\r\ncontent-length: 0\r\n\r\nPOST /smuggled HTTP/1.1\r\nx: y"

VALID_TRACEPARENTS = [
    TP,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",  # a later version, 55 characters
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-adds",
]
INVALID_TRACEPARENTS = [
    "",
    TP + INJECTED,
    TP + "\n",
    TP + "\r",
    TP + "\x00",
    TP[:-1],
    TP + "-extra",  # version 00 is exactly 55 characters
    TP.upper(),
    "ff" + TP[2:],  # version ff is invalid
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent id
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # a later version: "-" after flags
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-a b",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "a" * 300,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u00e9",
]
VALID_TRACESTATES = [
    "congo=t61rcWkgMzE",
    "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    "rojo=00f067aa0ba902b7 , \tcongo=t61rcWkgMzE",
    "a=1,,b=2",  # empty list-members are allowed
    "vendor@tenant=x",
    "0tenant@vendor=x",
    "a*b/c_d-e=v a l",  # values may contain spaces, not at the end
    ",".join(f"k{i}=v" for i in range(32)),
]
INVALID_TRACESTATES = [
    "",
    ",",
    "k=v" + INJECTED,
    "k=v\n",
    "K=v",  # keys are lowercase
    "k",
    "k=",
    "=v",
    "k=v=w",
    "k=a,b",
    "a=1,a=2",  # duplicate key
    "0k=v",  # a simple key starts with a letter
    "t@0v=x",  # a vendor starts with a letter
    "k=\u00e9",
    ",".join(f"k{i}=v" for i in range(33)),
    "k=" + "v" * 600,
]
VALID_MEDIA_TYPES = [
    "application/json",
    "application/cloudevents+json",
    "text/plain; charset=utf-8",
    'text/plain;charset="utf-8"',
    'multipart/form-data; boundary="a b;c\\"d"',
    "application/vnd.api+json ; version=2 ; q=x",
    "a/b;",  # RFC 9110 allows empty parameters
    "application/json;;charset=utf-8",
]
INVALID_MEDIA_TYPES = [
    "",
    "json",
    "application/",
    "/json",
    "application/json" + INJECTED,
    "application/json\n",
    "application/json; charset",
    "application/json; charset=",
    "application/json; charset=utf 8",
    'application/json; charset="utf-8',
    'application/json; charset="a\rb"',
    "text/plain; charset=\u00e9",
    "app lication/json",
    "application/json, text/plain",
    "a/" + "b" * 300,
]


@pytest.mark.parametrize("value", VALID_TRACEPARENTS)
def test_valid_traceparents_pass(value: str) -> None:
    assert wire_syntax.traceparent(value) == value
    assert wire_syntax.traceparent(f" {value}\t") == value


@pytest.mark.parametrize("value", INVALID_TRACEPARENTS)
def test_invalid_traceparents_are_refused(value: str) -> None:
    assert wire_syntax.traceparent(value) is None


@pytest.mark.parametrize("value", VALID_TRACESTATES)
def test_valid_tracestates_pass(value: str) -> None:
    assert wire_syntax.tracestate(value) == value


@pytest.mark.parametrize("value", INVALID_TRACESTATES)
def test_invalid_tracestates_are_refused(value: str) -> None:
    assert wire_syntax.tracestate(value) is None


@pytest.mark.parametrize("value", VALID_MEDIA_TYPES)
def test_valid_media_types_pass(value: str) -> None:
    assert wire_syntax.media_type(value) == value


@pytest.mark.parametrize("value", INVALID_MEDIA_TYPES)
def test_invalid_media_types_are_refused(value: str) -> None:
    assert wire_syntax.media_type(value) is None


@given(st.text(max_size=300))
def test_nothing_that_passes_can_break_a_header_line(value: str) -> None:
    for check in (wire_syntax.traceparent, wire_syntax.tracestate, wire_syntax.media_type):
        kept = check(value)
        if kept is not None:
            assert kept.isascii() and all(c == "\t" or " " <= c <= "~" for c in kept)


# -- decode --------------------------------------------------------------------------------------------


def decoded(
    value: bytes, headers: list[tuple[str, bytes | None]]
) -> tuple[dict[str, str], str, Counter[str]]:
    dropped: Counter[str] = Counter()
    event = decode("orders", 0, 7, None, value, headers, 1.0, dropped=dropped)
    return event.attributes, event.content_type, dropped


SIMPLE = b'{"event": "a", "data": 1}'


def binary(**attributes: str) -> list[tuple[str, bytes | None]]:
    return [("ce_type", b"a"), ("ce_id", b"e-1")] + [(f"ce_{k}", v.encode()) for k, v in attributes.items()]


def test_binary_mode_keeps_valid_values_and_drops_invalid_ones() -> None:
    attributes, content_type, dropped = decoded(
        b"{}", binary(traceparent=TP, tracestate="k=v", datacontenttype="text/plain; charset=utf-8")
    )
    assert (attributes["traceparent"], attributes["tracestate"]) == (TP, "k=v")
    assert content_type == "text/plain; charset=utf-8" and not dropped

    attributes, content_type, dropped = decoded(
        b"{}", binary(traceparent=TP + INJECTED, tracestate="k=v", datacontenttype="text/plain" + INJECTED)
    )
    assert "traceparent" not in attributes and "tracestate" not in attributes  # no tracestate alone
    assert content_type == "application/json"
    assert dropped == {"traceparent": 1, "tracestate": 1, "datacontenttype": 1}


def test_an_invalid_binary_attribute_falls_back_to_a_valid_record_header() -> None:
    headers = [
        *binary(traceparent="nope", datacontenttype="nope"),
        ("traceparent", TP.encode()),
        ("content-type", b"text/csv"),
    ]
    attributes, content_type, dropped = decoded(b"{}", headers)
    assert attributes["traceparent"] == TP and content_type == "text/csv"
    assert dropped == {"traceparent": 1, "datacontenttype": 1}


def test_structured_mode_drops_invalid_trace_attributes_and_record_content_types() -> None:
    value = orjson.dumps({"specversion": "1.0", "type": "a", "source": "/s", "traceparent": TP + INJECTED})
    attributes, content_type, dropped = decoded(
        value, [("content-type", b"application/json" + INJECTED.encode())]
    )
    assert "traceparent" not in attributes and content_type == "application/json"
    assert dropped == {"traceparent": 1, "content-type": 1}

    value = orjson.dumps(
        {"specversion": "1.0", "type": "a", "source": "/s", "traceparent": TP, "tracestate": "k=v"}
    )
    attributes, content_type, dropped = decoded(value, [("content-type", b"application/cloudevents+json")])
    assert (attributes["traceparent"], attributes["tracestate"]) == (TP, "k=v")
    assert content_type == "application/cloudevents+json" and not dropped


def test_plain_record_headers_of_the_simple_shape_are_checked() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("traceparent", (TP + INJECTED).encode()),
        ("tracestate", b"k=v"),
        ("content-type", b"application/json" + INJECTED.encode()),
        ("tenant", b"acme"),
    ]
    attributes, content_type, dropped = decoded(SIMPLE, headers)
    assert attributes == {"tenant": "acme"} and content_type == "application/json"
    assert dropped == {"traceparent": 1, "tracestate": 1, "content-type": 1}

    attributes, _, dropped = decoded(SIMPLE, [("traceparent", f" {TP} ".encode())])
    assert attributes == {"traceparent": TP} and not dropped
    attributes, _, dropped = decoded(SIMPLE, [("tenant", b"acme"), ("Region", b"eu")])
    assert attributes == {"tenant": "acme", "region": "eu"} and not dropped, "none of them is checked"


def test_decode_without_a_counter_still_drops() -> None:
    event = decode("orders", 0, 7, None, SIMPLE, [("traceparent", b"x\r\ny: z")], 1.0)
    assert "traceparent" not in event.attributes
