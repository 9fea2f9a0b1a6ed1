"""Evaluating filters: ``Bindings`` (one event's variables) and ``FilterErrors`` (what failed).

``Bindings(event)`` is made once per routed event, when the first candidate with an expression is
met, and is shared by every candidate: the CEL activation wraps the event's values without copying
them, and the payload is parsed (``Event.parsed_data``) only for the first expression that reads
``data``. An evaluation error (a missing field, a type mismatch, a result that is not a boolean, the
iteration budget) raises ``EvaluationError``; the router counts it in ``FilterErrors`` and treats it
as no match.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fanout.model.event import Event, iso_time
from fanout.model.expressions.compile import Program, environment
from fanout.model.expressions.limits import MAX_MAPPED_LIST

log = logging.getLogger("fanout.filters")
_ENV = environment()
_DATA_ONLY = frozenset({"data"})
LOG_INTERVAL = 60.0
MAX_REASON = 200


class EvaluationError(Exception):
    """An expression that did not produce a usable value for this event."""


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _longest_list(value: Any) -> int:
    longest = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            longest = max(longest, len(item))
            todo.extend(x for x in item if isinstance(x, list | dict))
        elif isinstance(item, dict):
            todo.extend(x for x in item.values() if isinstance(x, list | dict))
    return longest


class Bindings:
    """The variables of one event, bound for CEL: only those an expression names, each built once (the
    payload is parsed only for an expression that reads ``data``)."""

    __slots__ = ("_activations", "_event", "_longest", "_values")

    def __init__(self, event: Event) -> None:
        self._event = event
        self._values: dict[str, Any] = {}
        self._activations: dict[frozenset[str], Any] = {}
        self._longest: int | None = None

    def _value(self, name: str) -> Any:
        value = self._values.get(name)
        if value is None and name not in self._values:
            event = self._event
            if name == "data":
                value = event.parsed_data()
            elif name == "event":
                value = {
                    "id": event.id,
                    "type": event.type,
                    "source": event.attributes.get("source", ""),
                    "time": iso_time(event.time),
                    "topic": event.topic,
                    "attributes": event.attributes,
                }
            elif name == "headers":
                value = {header.lower(): _text(raw) for header, raw in event.headers}
            else:
                value = _text(event.key)
            self._values[name] = value
        return value

    def activation(self, program: Program) -> Any:
        """The activation ``program`` runs in; raises ``EvaluationError`` when the payload holds a list
        too long for an expression that maps or filters lists."""
        activation = self._activations.get(program.variables)
        if activation is None:
            if program.variables == _DATA_ONLY:
                values = {"data": self._event.parsed_data()}
            else:
                values = {name: self._value(name) for name in program.variables}
            activation = _ENV.Activation(values)
            self._activations[program.variables] = activation
        if program.builds_lists:
            if self._longest is None:
                self._longest = _longest_list(self._event.parsed_data())
            if self._longest > MAX_MAPPED_LIST:
                raise EvaluationError(
                    f"the payload has a list of {self._longest} elements; map() and filter() take at "
                    f"most {MAX_MAPPED_LIST}"
                )
        return activation


def run(program: Program, bindings: Bindings) -> Any:
    """Evaluate ``program``: its CEL value; raises ``EvaluationError``."""
    try:
        value = program.expression.eval(bindings.activation(program))
    except RuntimeError as exc:
        raise EvaluationError(reason(str(exc))) from None
    if value.type().name() == "ERROR":
        raise EvaluationError(reason(str(value.value())))
    return value


def passes(program: Program, bindings: Bindings) -> bool:
    """Whether a filter accepts the event; raises ``EvaluationError`` (a non-boolean result too)."""
    try:
        value = program.expression.eval(bindings.activation(program))
    except RuntimeError as exc:
        raise EvaluationError(reason(str(exc))) from None
    result = value.value()
    if result is True or result is False:
        return result  # an error's value is its message, never a boolean
    if value.type().name() == "ERROR":
        raise EvaluationError(reason(str(result)))
    raise EvaluationError(f"the filter returned {value.type().name().lower()}, not a boolean")


def reason(message: str) -> str:
    """An evaluation error as one short line (it goes into logs and dead-letter headers)."""
    line = " ".join(message.replace("[INTERNAL]", "").split())
    return line[:MAX_REASON]


class FilterErrors:
    """Filter evaluation errors by subscription id (``counts``). The first error of a subscription in
    each ``interval`` seconds is logged with its message; the others are only counted."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._interval = interval
        self._clock = clock
        self._logged: dict[str, float] = {}

    def record(self, sub_id: str, message: str) -> None:
        self.counts[sub_id] += 1
        now = self._clock()
        last = self._logged.get(sub_id)
        if last is None or now - last >= self._interval:
            self._logged[sub_id] = now
            log.warning(
                "filter_expr of subscription %s failed to evaluate (no match): %s",
                sub_id,
                message,
                extra={"subscription": sub_id, "errors": self.counts[sub_id]},
            )

    def forget(self, sub_ids: set[str]) -> None:
        """Drop what is kept about deleted subscriptions."""
        for sub_id in sub_ids:
            self.counts.pop(sub_id, None)
            self._logged.pop(sub_id, None)
