"""Transforms: a CEL expression whose value, as JSON, is the body a subscriber receives.

``render(program, event, max_bytes)`` evaluates the transform and converts its value to JSON bytes:
maps (string keys only, written sorted so that a retry sends the same bytes), lists, strings,
numbers (finite), booleans and null as themselves; timestamps as RFC 3339 text in UTC; durations as
seconds with an ``s`` suffix (``"1.5s"``, as protobuf's JSON mapping writes them); bytes as base64.
The conversion reads the value lazily and stops as soon as the body would exceed ``max_bytes``, so a
transform that repeats a large payload many times costs no more than ``max_bytes`` to refuse.
Every failure raises ``TransformFailed`` with a one-line reason.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fanout.model.event import Event
from fanout.model.expressions.compile import Program
from fanout.pipeline.expressions.evaluate import Bindings, EvaluationError, run

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64


class TransformFailed(Exception):
    """A transform that produced no body: the delivery is dead-lettered with this reason."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise TransformFailed("the body is larger than the transform limit")


def _timestamp(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _duration(value: timedelta) -> str:
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    return f"{sign}{seconds}.{fraction:06d}".rstrip("0").rstrip(".") + "s"


def _plain(value: Any, budget: _Budget, depth: int) -> Any:
    """A CEL value (or a lazy accessor of one) as JSON-able Python, within ``budget``."""
    if depth > MAX_DEPTH:
        raise TransformFailed(f"the body is nested deeper than {MAX_DEPTH} levels")
    item = value.value()
    if isinstance(item, dict):
        budget.spend(2)
        out: dict[str, Any] = {}
        for key, element in item.items():
            if not isinstance(key, str):
                raise TransformFailed(f"a map key is {type(key).__name__}; JSON object keys are strings")
            budget.spend(len(key) + 4)
            out[key] = _plain(element, budget, depth + 1)
        return out
    if isinstance(item, list):
        budget.spend(2)
        return [_plain(element, budget, depth + 1) for element in item]
    return _scalar(item, value, budget)


def _scalar(item: Any, value: Any, budget: _Budget) -> Any:
    if item is None or isinstance(item, bool):
        budget.spend(5)
        return item
    if isinstance(item, str):
        budget.spend(len(item) + 2)
        return item
    if isinstance(item, int):
        budget.spend(21)
        return item
    if isinstance(item, float):
        if not math.isfinite(item):
            raise TransformFailed(f"{item} cannot be written as JSON")
        budget.spend(24)
        return item
    if isinstance(item, bytes | bytearray):
        budget.spend(len(item) * 4 // 3 + 4)
        return base64.b64encode(item).decode()
    if isinstance(item, datetime):
        budget.spend(32)
        return _timestamp(item)
    if isinstance(item, timedelta):
        budget.spend(32)
        return _duration(item)
    raise TransformFailed(f"a {value.type().name().lower()} value cannot be written as JSON")


def render(program: Program, event: Event, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The body ``program`` makes for ``event``; raises ``TransformFailed``."""
    try:
        value = run(program, Bindings(event))
    except EvaluationError as exc:
        raise TransformFailed(str(exc)) from None
    try:
        body = orjson.dumps(_plain(value, _Budget(max_bytes), 0), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TransformFailed(f"the body cannot be written as JSON: {exc}") from None
    if len(body) > max_bytes:
        raise TransformFailed(f"the body is {len(body)} bytes, more than the transform limit {max_bytes}")
    return body
