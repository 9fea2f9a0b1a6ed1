"""Static limits on a CEL expression, checked after it compiles: what keeps its cost bounded.

cel-cpp stops an evaluation after 10,000 comprehension iterations, but an iteration can cost as much
as the payload (``size(data.note)`` reads a whole string), and ``+`` can build values larger than the
payload. So, with the payload's size P and the expression's length L:

- a comprehension's body (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) may use its own
  variable, literals and functions, but no outer variable (``data``, ``event``, ``headers``, ``key``, an
  enclosing comprehension's variable): each element is then visited a bounded number of times, and an
  evaluation costs O(L * P) rather than O(10,000 * P);
- at most ``MAX_CONCATENATIONS`` ``+`` operators, so no value grows past a small multiple of P;
- ``map`` and ``filter`` build their result by copying (quadratic in the list's length in cel-cpp
  0.1): the evaluator refuses payloads with lists longer than ``MAX_MAPPED_LIST`` for expressions
  that use them (``Shape.builds_lists``).

The checks read tokens, not a syntax tree; they run only on expressions CEL has already compiled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_CONCATENATIONS = 16
MAX_MAPPED_LIST = 500
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
LIST_BUILDERS = frozenset({"map", "filter"})
VARIABLES = frozenset({"event", "data", "headers", "key"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<raw>(?:[rR][bB]?|[bB][rR])(?:\"\"\".*?\"\"\"|'''.*?'''|"[^"\n]*"|'[^'\n]*'))
  | (?P<string>[bB]?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''
        |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<quoted>`[^`\n]*`)
  | (?P<number>\.?[0-9][0-9a-zA-Z_.]*(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)


class LimitExceeded(ValueError):
    """An expression outside the limits; ``offset`` is where (0-based, in characters)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@dataclass(frozen=True, slots=True)
class Shape:
    """What evaluation needs to know about an expression."""

    uses_data: bool
    builds_lists: bool
    variables: frozenset[str] = VARIABLES


@dataclass(slots=True)
class _Frame:
    comprehension: str | None
    variable: str | None = None
    in_body: bool = False
    names: set[str] = field(default_factory=set)


def tokenize(source: str) -> list[tuple[str, str, int]]:
    """``source`` as (kind, text, offset) tokens, without spaces and comments; kinds: ``raw``,
    ``string``, ``quoted``, ``number``, ``ident``, ``op``."""
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise LimitExceeded(pos, f"unexpected character {source[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append((kind, match.group(), pos))
        pos = match.end()
    return out


def check(source: str) -> Shape:
    """The expression's ``Shape``; raises ``LimitExceeded`` when it breaks a limit."""
    tokens = tokenize(source)
    stack: list[_Frame] = []
    uses_data = builds_lists = False
    plus = 0
    variables: set[str] = set()
    for i, (kind, text, offset) in enumerate(tokens):
        before = tokens[i - 1][1] if i else ""
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op" and text in "([{":
            name = before if text == "(" and i >= 2 and tokens[i - 2][1] == "." else None
            stack.append(_Frame(name if name in COMPREHENSIONS else None))
            builds_lists = builds_lists or name in LIST_BUILDERS
        elif kind == "op" and text in ")]}":
            if stack:
                stack.pop()
        elif kind == "op" and text == "," and stack and stack[-1].comprehension:
            stack[-1].in_body = True
        elif kind == "op" and text == "+":
            plus += 1
            if plus > MAX_CONCATENATIONS:
                raise LimitExceeded(offset, f"more than {MAX_CONCATENATIONS} '+' operators")
        elif kind == "ident" and before != "." and after != "(":
            frame = stack[-1] if stack else None
            if frame is not None and frame.comprehension and not frame.in_body and frame.variable is None:
                frame.variable = text
                continue
            uses_data = uses_data or text == "data"
            if text in VARIABLES:
                variables.add(text)
            _check_name(stack, text, offset)
    return Shape(uses_data, builds_lists, frozenset(variables))


def _check_name(stack: list[_Frame], name: str, offset: int) -> None:
    """Inside a comprehension's body only its own variable (and those of comprehensions nested in that
    body) may be named; a variable of fanout or of an enclosing comprehension may not."""
    body = next((f for f in reversed(stack) if f.comprehension and f.in_body), None)
    if body is None or name == body.variable:
        return
    if name in VARIABLES or any(f.variable == name for f in stack if f is not body):
        raise LimitExceeded(
            offset,
            f"inside {body.comprehension}() only its variable '{body.variable}' can be used, not "
            f"'{name}' (an iteration must not read the whole payload again)",
        )
