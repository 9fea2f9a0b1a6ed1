"""The router's index on ``data.<path> == literal`` / ``in [literals]`` conjuncts.

- ``equalities`` extracts exactly the conjuncts that are necessary for the filter to be true, and
  nothing from shapes where a conjunct is not necessary (``||``, ``!``, ``?:``) or a literal it cannot
  read exactly (escapes, raw and byte strings, ``u`` suffixes);
- the index narrows 1,000 filtered subscriptions to the one the payload can match;
- property: for random events and random filters (indexable equalities, ``in``, non-indexable
  expressions, ``||``/``!`` around them, missing fields, 1 vs 1.0 vs "1", booleans, null, lists, maps,
  numbers beyond 2^53, payloads that are not objects), the indexed-then-CEL router selects exactly what
  evaluating every subscription's filter selects.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fanout.model.event import Event
from fanout.model.expressions.equalities import Equality, equalities, sole_equality
from fanout.model.subscription import Subscription
from fanout.pipeline.data_index import DataIndex
from fanout.pipeline.expressions import Bindings, EvaluationError, passes
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub


def event(data: Any, raw: bytes | None = None) -> Event:
    return Event(
        id="e",
        type="order.created",
        topic="orders",
        partition=0,
        offset=0,
        key=None,
        time=1_780_000_000.0,
        value=raw if raw is not None else orjson.dumps(data),
        headers=[],
        attributes={},
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('data.region == "eu"', [Equality(("region",), frozenset({("string", "eu")}))]),
        ("'eu' == data.a.b", [Equality(("a", "b"), frozenset({("string", "eu")}))]),
        ("data.n == -3", [Equality(("n",), frozenset({("number", -3)}))]),
        ("data.n == 1.5e1", [Equality(("n",), frozenset({("number", 15.0)}))]),
        ("data.n == 0x10", [Equality(("n",), frozenset({("number", 16)}))]),
        ("data.ok == true", [Equality(("ok",), frozenset({("bool", True)}))]),
        ("data.v == null", [Equality(("v",), frozenset({("null", None)}))]),
        (
            'data.r in ["eu", 1, false]',
            [Equality(("r",), frozenset({("string", "eu"), ("number", 1), ("bool", False)}))],
        ),
        (
            '((data.a == 1) && data.b > 2) && (data.c in ["x"])',
            [
                Equality(("a",), frozenset({("number", 1)})),
                Equality(("c",), frozenset({("string", "x")})),
            ],
        ),
        ("data.a == 1 || data.b == 2", []),
        ("!(data.a == 1)", []),
        ("data.a == 1 ? true : false", []),
        ("(data.a == 1 || data.b == 2) && data.c == 3", [Equality(("c",), frozenset({("number", 3)}))]),
        ('data.a == "e\\u0075"', []),
        ('data.a == r"eu"', []),
        ('data.a == b"eu"', []),
        ("data.a == 1u", []),
        ("data.a == 9007199254740993", []),
        ("data.a[0] == 1", []),
        ("data.a.size() == 1", []),
        ("data.a == 1 + 1", []),
        ("data.a == data.b", []),
        ('data.a in ["x", data.b]', []),
        ('event.type == "x"', []),
    ],
)
def test_equalities(source: str, expected: list[Equality]) -> None:
    assert list(equalities(source)) == expected


@pytest.mark.parametrize(
    ("source", "sole"),
    [
        ('data.c == "x"', True),
        ('(data.c in ["x", 1])', True),
        ("1 == data.c", True),
        ('data.c == "x" && data.n > 1', False),
        ('data.c == "x" && data.d == "y"', False),
        ('data.c == "x" || data.d == "y"', False),
        ('!(data.c == "x")', False),
        ('data.c == "x" ? true : false', False),
        ("data.n > 1", False),
    ],
)
def test_a_sole_equality_is_the_whole_filter(source: str, sole: bool) -> None:
    assert (sole_equality(source) is not None) is sole


def test_the_index_narrows_a_thousand_filters_to_the_matching_one() -> None:
    subs = [make_sub(id=f"s{i}", filter_expr=f"data.n == {i} && data.blob != 'x'") for i in range(1000)]
    index = DataIndex(subs)
    out: list[Subscription] = []
    index.collect(event({"n": 417.0, "blob": "y"}), out, [])
    assert [s.id for s in out] == ["s417"]
    table = RoutingTable.build(subs)
    assert [s.id for s in table.route(event({"n": 417, "blob": "y"}))] == ["s417"]
    assert table.route(event({"n": "417", "blob": "y"})) == ()
    # A missing field: every filter under that path is evaluated (and counts its error).
    assert table.route(event({"blob": "y"})) == ()
    assert sum(table.errors.counts.values()) == 1000


def test_the_rarest_conjunct_is_the_one_indexed() -> None:
    subs = [make_sub(id=f"s{i}", filter_expr=f'data.kind == "order" && data.n == {i}') for i in range(50)]
    index = DataIndex(subs)
    out: list[Subscription] = []
    index.collect(event({"kind": "order", "n": 3}), out, [])
    assert [s.id for s in out] == ["s3"]


def test_a_filter_that_is_one_equality_matches_without_being_evaluated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fanout.pipeline.route as route

    evaluated: list[str] = []

    def counted(program: Any, bindings: Bindings) -> bool:
        evaluated.append(program.source)
        return passes(program, bindings)

    monkeypatch.setattr(route, "passes", counted)
    subs = [make_sub(id=f"s{i}", filter_expr=f'(data.c in ["c{i}", "x"])') for i in range(100)]
    subs.append(make_sub(id="both", filter_expr='data.c == "c7" && has(data.n)'))
    subs.append(make_sub(id="wild", events=["*", "order.*"], filter_expr='data.c == "c7"'))
    table = RoutingTable.build(subs)
    assert {s.id for s in table.route(event({"c": "c7", "n": 2}))} == {"s7", "both", "wild"}
    assert evaluated == ['data.c == "c7" && has(data.n)'], "only the filter with more than the equality"
    evaluated.clear()
    assert {s.id for s in table.route(event({"c": "x", "n": 0}))} == {f"s{i}" for i in range(100)}
    assert evaluated == []
    # a value the index cannot key: every filter under the path is evaluated
    assert table.route(event({"c": ["c7"], "n": 2})) == () and len(evaluated) == 102


LITERALS = [
    "1",
    "1.0",
    '"1"',
    "true",
    "false",
    "null",
    "2",
    "-1",
    '"eu"',
    "'us'",
    "0x2",
    "1e0",
    "1u",
    "0",
    "9007199254740992.0",
]
PATHS = ["data.a", "data.b", "data.c.d"]
ATOMS = st.one_of(
    st.builds(lambda p, lit: f"{p} == {lit}", st.sampled_from(PATHS), st.sampled_from(LITERALS)),
    st.builds(lambda p, lit: f"{lit} == {p}", st.sampled_from(PATHS), st.sampled_from(LITERALS)),
    st.builds(
        lambda p, lits: f"{p} in [{', '.join(lits)}]",
        st.sampled_from(PATHS),
        st.lists(st.sampled_from([x for x in LITERALS if x != "1u"]), max_size=3),
    ),
    st.sampled_from(
        [
            "data.a > 0",
            "has(data.c.d)",
            "data.b != 1",
            'data.c == {"d": "eu"}',
            "size(data.a) > 0",
            "data.a == data.b",
            "true",
            "false",
        ]
    ),
)
FILTERS = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.builds(lambda x, y: f"({x}) && ({y})", inner, inner),
        st.builds(lambda x, y: f"{x} && {y}", inner, inner),
        st.builds(lambda x, y: f"({x}) || ({y})", inner, inner),
        st.builds(lambda x: f"!({x})", inner),
    ),
    max_leaves=4,
)
VALUE_LIST: list[Any] = [
    1,
    1.0,
    "1",
    True,
    False,
    None,
    2,
    2.0,
    -1,
    0,
    -0.0,
    "eu",
    "us",
    2**60,
    2**53 + 1,
    [1],
    {"d": "eu"},
]
VALUES = st.sampled_from(VALUE_LIST)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "a": VALUES,
        "b": VALUES,
        "c": st.one_of(VALUES, st.fixed_dictionaries({}, optional={"d": VALUES})),
    },
)
PAYLOADS = st.one_of(OBJECTS, OBJECTS, OBJECTS, VALUES, st.just(b"not json"))


@pytest.mark.parametrize("template", ["data.a == {}", "{} == data.a", "data.a in [{}]", "data.a in [{}, 7]"])
def test_every_literal_against_every_value(template: str) -> None:
    """Exhaustive for one conjunct: each literal against each value (1 vs 1.0 vs "1", booleans, null,
    -0.0, beyond 2^53, lists, maps) and against a missing field, in an object and as a bare payload."""
    subs = [make_sub(id=f"s{i}", filter_expr=template.format(lit)) for i, lit in enumerate(LITERALS)]
    table = RoutingTable.build(subs)
    for value in [*VALUE_LIST, "absent"]:
        for payload in ({} if value == "absent" else {"a": value}, value):
            assert {s.id for s in table.route(make(payload))} == naive(subs, payload), (template, payload)


def naive(subs: list[Subscription], payload: Any, errors: Counter[str] | None = None) -> set[str]:
    """What evaluating every subscription's filter with CEL selects; its errors counted in ``errors``."""
    chosen = set()
    for sub in subs:
        assert sub.filter_program is not None
        try:
            if passes(sub.filter_program, Bindings(make(payload))):
                chosen.add(sub.id)
        except EvaluationError:
            if errors is not None:
                errors[sub.id] += 1
    return chosen


def make(payload: Any) -> Event:
    return event(None, payload) if isinstance(payload, bytes) else event(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FILTERS, min_size=1, max_size=10), st.lists(PAYLOADS, min_size=1, max_size=5))
@example(
    ['(data.a == 1) && ((data.a == "1") || (data.b == 1))'], [{"a": 1}]
)  # found by make test, 2026-11-30
def test_indexed_then_cel_equals_evaluating_every_filter(filters: list[str], payloads: list[Any]) -> None:
    subs = [make_sub(id=f"s{i}", filter_expr=f) for i, f in enumerate(filters)]
    table = RoutingTable.build(subs)
    for payload in payloads:
        assert {s.id for s in table.route(make(payload))} == naive(subs, payload), payload
