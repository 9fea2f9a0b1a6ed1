"""The fast schema check (jsonschema-rs first, jsonschema for the rest) never accepts what jsonschema, the
reference, refuses, and explains refusals exactly as jsonschema does."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.api.openapi import bundle, components
from fanout.api.schema_check import SchemaCheck, field_errors, reachable_patterns, same_in_python_and_ecma
from fanout.api.validation import Operation, operations

OPERATIONS = operations(bundle())
PUBLISH = OPERATIONS[("POST", "/v1/events")]


def fast_checks() -> list[tuple[str, SchemaCheck]]:
    found = []
    for (method, path), op in OPERATIONS.items():
        for media, check in op.bodies.items():
            if check is not None and check.fast is not None:
                found.append((f"{method} {path} {media}", check))
        for param in op.parameters:
            if param.check.fast is not None:
                found.append((f"{method} {path} {param.where}.{param.name}", param.check))
    return found


FAST = fast_checks()


def test_the_publish_path_has_the_fast_validator() -> None:
    assert all(check is not None and check.fast is not None for check in PUBLISH.bodies.values())
    assert all(param.check.fast is not None for param in PUBLISH.parameters)


def test_a_schema_whose_patterns_mean_something_else_in_ecma_gets_only_the_reference() -> None:
    # \S: Python's re counts \x1c-\x1f as whitespace, ECMA-262 does not; jsonschema-rs would accept this.
    check = SchemaCheck({"type": "string", "pattern": "^\\S+$"})
    assert check.fast is None
    assert check.errors("a\x1cb", "body") == [{"field": "body", "message": 'must satisfy pattern "^\\\\S+$"'}]
    create = OPERATIONS[("POST", "/v1/subscriptions")].bodies["application/json"]
    assert create is not None and create.fast is None, "the subscription URL pattern uses \\s and \\S"


def test_unsafe_patterns_are_recognised() -> None:
    for pattern in ("^\\d+$", "\\w", "\\S", "\\bx", "(?i)x", "(?P<n>x)", "[[:alpha:]]", "[a&&b]", "x{,3}"):
        assert not same_in_python_and_ecma(pattern), pattern
    for pattern in ("^[^\\x00-\\x08\\x0a-\\x1f\\x7f]+$", "^[A-Za-z0-9._-]{1,249}$", "^job_[0-9a-f]{1,16}$"):
        assert same_in_python_and_ecma(pattern), pattern


def test_reachable_patterns_follow_references() -> None:
    schema = PUBLISH.bodies["application/json"]
    assert schema is not None
    patterns = reachable_patterns({"$ref": "#/components/schemas/PublishRequest"}, components()["schemas"])
    assert "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]+$" in patterns
    assert "^([a-z0-9]{1,20}|data_base64)$" in patterns


def test_a_value_only_python_accepts_is_still_accepted() -> None:
    # Python's $ matches before a final newline; ECMA's does not: the reference decides, as before.
    check = SchemaCheck({"type": "string", "pattern": "^[a-z]+$"})
    assert check.fast is not None and not check.fast.is_valid("abc\n")
    assert check.errors("abc\n", "query.x") == []


def _reference_errors(op: Operation, body: Any) -> list[dict[str, str]]:
    check = op.bodies["application/json"]
    assert check is not None
    return field_errors(check.reference, body, "body")


def test_refusals_are_explained_by_the_reference() -> None:
    check = PUBLISH.bodies["application/json"]
    assert check is not None
    for body in (
        {},
        {"event": ""},
        {"event": "a", "extra": 1},
        {"specversion": "1.0", "type": "t", "source": "s", "Bad-Name": "x"},
        [{"event": "a"}, {"event": 3}],
        [],
    ):
        errors = check.errors(body, "body")
        assert errors, body
        assert errors == _reference_errors(PUBLISH, body)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["1.0", "a\n", "\x00", "\x1c", "evt_1", "user.created", "x" * 300, "", " "]),
)
NAMES = st.sampled_from(
    ["event", "data", "id", "timestamp", "specversion", "type", "source", "subject", "time",
     "datacontenttype", "traceparent", "tracestate", "dataschema", "data_base64", "ext1", "Ext",
     "reason", "since", "until", "grace_seconds", "subscription", "ids", "event_ids", "limit",
     "url", "topics", "events", "enabled", "x"]
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(NAMES | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON, index=st.integers(min_value=0))
def test_the_fast_validator_never_accepts_what_the_reference_refuses(value: Any, index: int) -> None:
    name, check = FAST[index % len(FAST)]
    assert check.fast is not None
    if check.fast.is_valid(value):
        assert not list(check.reference.iter_errors(value)), name


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


SIMPLE = st.fixed_dictionaries(
    {"event": st.text(max_size=300)},
    optional={"id": st.text(max_size=300), "data": JSON, "timestamp": SCALARS},
)
CLOUDEVENT = st.builds(
    lambda required, optional, extensions: {**extensions, **required, **optional},
    st.fixed_dictionaries(
        {"specversion": st.sampled_from(["1.0", "1.1"]), "type": st.text(max_size=5), "source": st.text()}
    ),
    st.fixed_dictionaries({}, optional={"id": st.text(max_size=5), "datacontenttype": SCALARS, "data": JSON}),
    st.dictionaries(st.text(max_size=22), SCALARS, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=SIMPLE | CLOUDEVENT, batch=st.booleans())
def test_near_valid_events_are_judged_alike(event: dict[str, Any], batch: bool) -> None:
    """They agree, but where Python's ``$`` accepts a final newline (the fast one refuses, the reference
    then accepts: the answer is the reference's)."""
    check = PUBLISH.bodies["application/json"]
    assert check is not None and check.fast is not None
    body = [event, event] if batch else event
    fast, reference = check.fast.is_valid(body), not list(check.reference.iter_errors(body))
    if fast != reference:
        assert reference and not fast
        assert any(s.endswith("\n") for s in _strings(body))
    assert (check.errors(body, "body") == []) == reference
