"""Compiling CEL expressions once, with errors that say where.

``compile_expression(kind, source)`` type-checks ``source`` against fanout's variables, checks the
static limits (``limits``) and returns a ``Program``; the result is cached by (kind, source), so the
compile done when a subscription is validated is the one the routing table uses. A filter must be a
boolean expression (or ``dyn``, checked when it runs). Errors are ``CompileError`` with a 1-based line
and column: ``line 1, column 14: undeclared reference to 'dta'``.

Variables: ``event`` (map: id, type, source, time as RFC 3339 text, topic, attributes), ``data``
(the payload as JSON, ``dyn``), ``headers`` (map of lower-cased record header names to text) and
``key`` (the record key as text, "" when there is none).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from cel_expr_python import cel

from fanout.model.expressions.equalities import Conjunct, Equality, conjuncts, equalities, sole_equality
from fanout.model.expressions.limits import LimitExceeded, check

Kind = Literal["filter_expr", "transform"]
MAX_EXPRESSION_LENGTH = 2048
MAX_MESSAGE = 300
_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*)")
_T = cel.Type
_ENV = cel.NewEnv(
    variables={
        "event": _T.Map(_T.STRING, _T.DYN),
        "data": _T.DYN,
        "headers": _T.Map(_T.STRING, _T.STRING),
        "key": _T.STRING,
    }
)
_LOCK = threading.Lock()


class CompileError(ValueError):
    """An expression that cannot be used: the 1-based ``line`` and ``column`` and what is wrong."""

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line = line
        self.column = column
        self.message = message[:MAX_MESSAGE]
        super().__init__(f"line {line}, column {column}: {self.message}")


@dataclass(frozen=True, slots=True, eq=False)
class Program:
    """A compiled expression. ``uses_data``: it reads the payload (parsed only then);
    ``builds_lists``: it uses ``map``/``filter`` (see ``limits.MAX_MAPPED_LIST``); ``variables``: the
    variables it names (only those are bound when it runs); ``equalities``: a
    filter's ``data.<path> == literal`` and ``data.<path> in [literals]`` conjuncts, which the router
    indexes (``equalities``); ``sole``: the filter is one such conjunct and nothing else; ``conjuncts``:
    all of a filter's conjuncts when each is an equality or a numeric comparison, so the router can
    decide it without CEL (``equalities.decide``), or None."""

    kind: Kind
    source: str
    expression: Any
    uses_data: bool
    builds_lists: bool
    variables: frozenset[str]
    equalities: tuple[Equality, ...] = ()
    sole: bool = False
    conjuncts: tuple[Conjunct, ...] | None = None


def environment() -> Any:
    """The CEL environment the expressions are compiled in (its ``Activation`` binds the variables)."""
    return _ENV


def _position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _compile_error(source: str, exc: Exception) -> CompileError:
    text = str(exc)
    found = _POSITION.search(text)
    if found is None:
        return CompileError(1, 1, text.split("\n")[0])
    message = found.group(3).split("\n")[0].removesuffix(" [INVALID_ARGUMENT]")
    return CompileError(int(found.group(1)), int(found.group(2)), message)


@lru_cache(maxsize=4096)
def compile_expression(kind: Kind, source: str) -> Program:
    """Compile ``source`` (a ``filter_expr`` or a ``transform``); raises ``CompileError``."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise CompileError(1, 1, f"longer than {MAX_EXPRESSION_LENGTH} characters")
    if not source.strip():
        raise CompileError(1, 1, "empty expression")
    try:
        with _LOCK:
            expression = _ENV.compile(source)
    except RuntimeError as exc:
        raise _compile_error(source, exc) from None
    try:
        shape = check(source)
    except LimitExceeded as exc:
        raise CompileError(*_position(source, exc.offset), exc.message) from None
    if kind == "filter_expr":
        result = expression.return_type().name()
        if result not in ("bool", "BOOL", "dyn", "DYN"):
            raise CompileError(1, 1, f"a filter must be a boolean expression, not {result.lower()}")
        found, sole = equalities(source), sole_equality(source) is not None
        return Program(
            kind,
            source,
            expression,
            shape.uses_data,
            shape.builds_lists,
            shape.variables,
            found,
            sole,
            conjuncts(source),
        )
    return Program(kind, source, expression, shape.uses_data, shape.builds_lists, shape.variables)
