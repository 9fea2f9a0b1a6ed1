"""The OpenAPI document (``schemas/openapi.yaml``) and the JSON Schemas it references, bundled into one.

``schemas/`` holds ``openapi.yaml`` and four JSON Schemas (``envelope``, ``subscription``,
``dead-letter``, ``attempt``). ``bundle()`` inlines each schema under ``components/schemas`` (the schema as
``Envelope``, its ``$defs`` as ``Envelope.<name>``) and rewrites every ``$ref`` to point there, so the
served ``/openapi.json`` is self-contained. ``validator(schema)`` compiles a JSON Schema 2020-12
validator for a piece of that document; the API validates requests with them.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
OPENAPI_FILE = "openapi.yaml"
SCHEMA_FILES = {
    "envelope.schema.json": "Envelope",
    "subscription.schema.json": "Subscription",
    "dead-letter.schema.json": "DeadLetter",
    "attempt.schema.json": "Attempt",
}
COMPONENTS = "#/components/schemas/"


def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON Schema files, as it is."""
    data: dict[str, Any] = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return data


def _target(ref: str, current: str | None) -> str:
    file, _, fragment = ref.partition("#")
    file = file or (current or "")
    prefix = SCHEMA_FILES.get(file)
    if prefix is None:
        return ref
    if fragment in ("", "/"):
        return COMPONENTS + prefix
    if fragment.startswith("/$defs/"):
        return f"{COMPONENTS}{prefix}.{fragment.removeprefix('/$defs/')}"
    raise ValueError(f"unsupported reference {ref!r}")


def _rewrite(node: Any, current: str | None) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v, current) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and (current is not None or not ref.startswith("#")):
            out["$ref"] = _target(ref, current)
        return out
    if isinstance(node, list):
        return [_rewrite(v, current) for v in node]
    return node


@functools.cache
def _bundled() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SCHEMA_DIR / OPENAPI_FILE).read_text())
    document = _rewrite(document, None)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, prefix in SCHEMA_FILES.items():
        schema = load_schema(name)
        defs = schema.pop("$defs", {})
        schema["x-schema-id"] = schema.pop("$id")
        schema.pop("$schema", None)
        schemas[prefix] = _rewrite(schema, name)
        for def_name, definition in defs.items():
            schemas[f"{prefix}.{def_name}"] = _rewrite(definition, name)
    return document


def bundle() -> dict[str, Any]:
    """The self-contained OpenAPI document (a fresh copy)."""
    return copy.deepcopy(_bundled())


@functools.cache
def served_json() -> bytes:
    return orjson.dumps(_bundled())


def components() -> dict[str, Any]:
    """The bundled document's ``components`` (shared: do not change it)."""
    found: dict[str, Any] = _bundled()["components"]
    return found


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for ``schema``, a part of the bundled document (its ``$ref``s resolve in it)."""
    root = {**schema, "components": components()}
    return Draft202012Validator(root)


def file_validator(name: str) -> Draft202012Validator:
    """A validator for one JSON Schema file as it is (its own ``$defs``)."""
    return Draft202012Validator(load_schema(name))
