"""A JSON Schema check that is fast for valid values and says exactly what jsonschema says for the rest.

``SchemaCheck(schema)`` holds two validators of one piece of the bundled OpenAPI document:

- **jsonschema** (the reference implementation, in Python) judges and explains. Every field error the
  API answers comes from it, so messages and fields are the same whichever validator ran.
- **jsonschema-rs** (compiled; about 1,000x faster on the envelope) is asked first. When it finds the
  value valid, the value is valid; when it does not, jsonschema decides (and a value it accepts is
  accepted, as before).

So the fast validator may only ever be stricter than the reference, never more lenient. The two differ
in regular expressions: Python's ``re`` against ECMA-262 (``\\s``, ``\\d``, ``\\w`` and their negations
cover other characters; Python's ``$`` also matches before a final newline, which only makes the fast
one stricter). A schema gets the fast validator only when every pattern it can reach (through its
``$ref``s) uses nothing but literal characters, ``\\xHH`` and escaped punctuation, where the two agree;
otherwise it is checked by jsonschema alone. Formats are annotations for both (not asserted).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from fanout.api.openapi import components, validator

MAX_ERRORS = 10
# Constructs whose meaning differs between the two (or that one lacks): backslash-letter escapes but
# \xHH, groups with flags or names, POSIX and nested classes, class set operations, ``{,n}``.
_DIFFERENT = re.compile(r"\\[A-Za-wyz]|\(\?|\[\[|&&|~~|--|\{,")


def _field(prefix: str, error: ValidationError) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return prefix + ("/" + path if path else "")


def _dumps(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()[:200]


def _message(error: ValidationError) -> str:
    kind = error.validator
    value = error.validator_value
    if kind in ("required", "additionalProperties", "propertyNames", "dependentRequired"):
        return str(error.message)[:300]
    if kind in ("oneOf", "anyOf", "allOf", "not"):
        return "does not match any allowed form"
    if kind == "type":
        return f"must be of type {value}"
    if kind in ("enum", "const"):
        return f"must be one of {_dumps(value if kind == 'enum' else [value])}"
    return f"must satisfy {kind} {_dumps(value)}"


def field_errors(check: Draft202012Validator, value: Any, prefix: str) -> list[dict[str, str]]:
    """jsonschema's errors for ``value`` (at most ``MAX_ERRORS``), as ``{"field", "message"}``; the
    value itself is never quoted (it may be a secret)."""
    errors = []
    for error in check.iter_errors(value):
        best = best_match([error]) or error
        errors.append({"field": _field(prefix, best), "message": _message(best)})
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def reachable_patterns(schema: Any, definitions: dict[str, Any]) -> list[str]:
    """Every ``pattern`` and ``patternProperties`` regex ``schema`` can reach, following ``$ref``s to
    ``#/components/schemas/<name>`` in ``definitions``."""
    found: list[str] = []
    seen: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("pattern"), str):
            found.append(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            found.extend(node["patternProperties"])
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            name = ref.removeprefix("#/components/schemas/")
            if name in definitions:
                todo.append(definitions[name])
        todo.extend(v for k, v in node.items() if k not in ("$ref", "pattern", "enum", "const"))
    return found


def same_in_python_and_ecma(pattern: str) -> bool:
    """True when ``pattern`` matches the same strings in Python's ``re`` and in ECMA-262, but for ``$``
    before a final newline (which only Python accepts)."""
    return _DIFFERENT.search(pattern) is None


class SchemaCheck:
    """One schema of the bundled document (its ``$ref``s resolve there); ``errors`` is empty when the
    value is valid."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.reference = validator(schema)
        definitions = components()["schemas"]
        self.fast: jsonschema_rs.Validator | None = None
        if all(same_in_python_and_ecma(p) for p in reachable_patterns(schema, definitions)):
            root = {**schema, "components": components()}
            self.fast = jsonschema_rs.Draft202012Validator(root, validate_formats=False, offline=True)

    def errors(self, value: Any, prefix: str) -> list[dict[str, str]]:
        fast = self.fast
        if fast is not None:
            try:
                if fast.is_valid(value):
                    return []
            except (ValueError, TypeError, OverflowError):
                pass  # a value it cannot convert: the reference decides
        return field_errors(self.reference, value, prefix)
