"""Syntax of the event values that end up in a subscriber's request headers: W3C Trace Context
(``traceparent``, ``tracestate``) and RFC 9110 media types (the request's ``Content-Type``).

``decode`` keeps such a value only when it passes here (otherwise the value is dropped and counted), and
the API refuses one that does not (400). A value that passes contains only visible ASCII, spaces and
tabs, so it can never break a header line. Each function returns the value to use (surrounding spaces
and tabs removed), or None when it is invalid.

- ``traceparent``: ``version-traceid-parentid-flags`` in lowercase hex; version ``ff`` and all-zero ids
  are invalid; version ``00`` is exactly 55 characters, a later version may append ``-`` and more.
- ``tracestate``: up to 32 comma-separated ``key=value`` list-members with unique keys, keys and values
  as the W3C grammar has them, at most ``MAX_TRACESTATE`` characters.
- media type: ``type/subtype`` tokens, then ``; name=value`` parameters whose value is a token or a
  quoted string, at most ``MAX_MEDIA_TYPE`` characters.

``format_traceparent`` writes the version ``00`` ``traceparent`` of a span context (an OpenTelemetry
``SpanContext``, or anything with its three integer fields).
"""

from __future__ import annotations

import re
from typing import Protocol

MAX_TRACEPARENT = 256
MAX_TRACESTATE = 512
MAX_TRACESTATE_MEMBERS = 32
MAX_MEDIA_TYPE = 256
OWS = " \t"

_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})-[0-9a-f]{2}"
    r"(?P<rest>-[\x21-\x7e]*)?"
)
_KEY = re.compile(
    r"[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13}",
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*")


def traceparent(value: str) -> str | None:
    text = value.strip(OWS)
    if len(text) > MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(text)
    if match is None:
        return None
    version, trace, parent, rest = match.group("version", "trace", "parent", "rest")
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace == "0" * 32 or parent == "0" * 16:
        return None
    return text


def tracestate(value: str) -> str | None:
    text = value.strip(OWS)
    if len(text) > MAX_TRACESTATE:
        return None
    keys: set[str] = set()
    for member in text.split(","):
        member = member.strip(OWS)
        if not member:
            continue
        key, sep, val = member.partition("=")
        if not sep or not _KEY.fullmatch(key) or not _VALUE.fullmatch(val) or key in keys:
            return None
        keys.add(key)
    if not keys or len(keys) > MAX_TRACESTATE_MEMBERS:
        return None
    return text


def media_type(value: str) -> str | None:
    text = value.strip(OWS)
    if len(text) > MAX_MEDIA_TYPE or not _MEDIA_TYPE.fullmatch(text):
        return None
    return text


class SpanIds(Protocol):
    """The parts of a span context that a ``traceparent`` carries (OpenTelemetry's ``SpanContext`` fits)."""

    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...

    @property
    def trace_flags(self) -> int: ...


def format_traceparent(context: SpanIds) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
