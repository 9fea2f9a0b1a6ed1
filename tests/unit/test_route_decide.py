"""Filters the router decides without CEL: every conjunct an equality (``==``, ``in``) or a numeric
comparison (``<``, ``<=``, ``>``, ``>=``) on a ``data`` field.

- ``conjuncts`` takes exactly those filters, and no other shape (``||``, ``!``, a field on both
  sides, a string, boolean or ``u`` literal, a bound beyond 2^53, an arithmetic side, a bracket index);
- each comparison against each value (ints, doubles, both mixed, -0.0, booleans, null, strings, lists,
  maps, numbers beyond 2^53, a missing field, a payload that is no object or no JSON): the router
  selects what CEL selects and counts the same evaluation errors;
- a filter decided from the payload is not run by CEL; one whose value it cannot judge is, and its
  error is counted;
- property: random conjunctions of comparisons, equalities and other expressions, on random payloads:
  the same selection and the same error counts as evaluating every filter with CEL.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.model.expressions.equalities import Comparison, Equality, conjuncts
from fanout.model.subscription import Subscription
from fanout.pipeline.expressions import Bindings, passes
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub
from tests.unit.test_route_data_index import make as event  # a payload, or raw bytes, as an event
from tests.unit.test_route_data_index import naive  # CEL on every filter, errors counted


def check_same(subs: list[Subscription], payloads: list[Any]) -> None:
    table = RoutingTable.build(subs)
    errors: Counter[str] = Counter()
    for payload in payloads:
        assert {s.id for s in table.route(event(payload))} == naive(subs, payload, errors), payload
        assert +table.errors.counts == +errors, payload


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("data.amount > 1000", [Comparison(("amount",), ">", 1000)]),
        ("1000 < data.amount", [Comparison(("amount",), ">", 1000)]),
        ("-1.5 >= data.a.b", [Comparison(("a", "b"), "<=", -1.5)]),
        ("data.n <= 0x10", [Comparison(("n",), "<=", 16)]),
        (
            '(data.a < 2) && data.c == "x"',
            [Comparison(("a",), "<", 2), Equality(("c",), frozenset({("string", "x")}))],
        ),
        (
            "data.a >= 1 && data.a < 5 && data.r in [1, 2]",
            [
                Comparison(("a",), ">=", 1),
                Comparison(("a",), "<", 5),
                Equality(("r",), frozenset({("number", 1), ("number", 2)})),
            ],
        ),
        ('data.c == "x"', [Equality(("c",), frozenset({("string", "x")}))]),
    ],
)
def test_conjuncts(source: str, expected: list[Any]) -> None:
    assert conjuncts(source) == tuple(expected)


@pytest.mark.parametrize(
    "source",
    [
        "data.a > data.b",
        "data.a > 1 || data.b == 2",
        '(data.a == 1) && ((data.a == "1") || (data.b == 1))',  # a conjunct that is a disjunction
        "data.a > 1 && (data.b == 2 ? true : false)",
        "!(data.a > 1)",
        "data.a > 1u",
        'data.a > "m"',
        "data.a > true",
        "size(data.a) > 1",
        "data.a > 1 && has(data.b)",
        "data.a > 9007199254740993",
        "data.a + 1 > 2",
        'data["a"] > 1',
        "data.a > 1 ? true : false",
        "data.a != 1",
        "event.attributes.n > 1",
    ],
)
def test_other_shapes_are_left_to_cel(source: str) -> None:
    assert conjuncts(source) is None


LITERALS = ["0", "1", "-1", "1.5", "-0.0", "0x2", "1e0", "2.0", "9007199254740992", "9007199254740992.0"]
VALUES: list[Any] = [
    0,
    1,
    -1,
    2,
    1.0,
    1.5,
    -2.5,
    0.5,
    -0.0,
    2.0,
    2**53,
    -(2**53),
    2**53 + 1,
    2**60,
    1e300,
    True,
    False,
    None,
    "1",
    "",
    [1],
    {"d": 1},
]


@pytest.mark.parametrize("operator", ["<", "<=", ">", ">="])
@pytest.mark.parametrize("template", ["data.a {op} {lit}", "{lit} {op} data.a", "(data.a {op} {lit})"])
def test_every_comparison_against_every_value(operator: str, template: str) -> None:
    subs = [
        make_sub(id=f"s{i}", filter_expr=template.format(op=operator, lit=lit))
        for i, lit in enumerate(LITERALS)
    ]
    assert all(s.filter_program is not None and s.filter_program.conjuncts for s in subs)
    payloads: list[Any] = [{"a": value} for value in VALUES]
    payloads += [{}, {"b": 1}, *VALUES, b"not json", b""]
    check_same(subs, payloads)


def test_a_decided_filter_is_not_run_by_cel_and_an_undecided_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import fanout.pipeline.route as route

    evaluated: list[str] = []

    def counted(program: Any, bindings: Bindings) -> bool:
        evaluated.append(program.source)
        return passes(program, bindings)

    monkeypatch.setattr(route, "passes", counted)
    over = make_sub(id="over", filter_expr='data.amount > 1000 && data.currency == "EUR"')
    table = RoutingTable.build([over, make_sub(id="small", filter_expr="data.amount <= 10")])
    assert [s.id for s in table.route(event({"amount": 1500, "currency": "EUR"}))] == ["over"]
    assert [s.id for s in table.route(event({"amount": 10.0, "currency": "EUR"}))] == ["small"]
    assert table.route(event({"amount": 1500, "currency": "USD"})) == ()
    assert evaluated == []
    assert not table.errors.counts
    # a string amount: neither can be decided, CEL runs both and both fail (no matching overload)
    assert table.route(event({"amount": "1500", "currency": "EUR"})) == ()
    assert sorted(evaluated) == sorted(['data.amount > 1000 && data.currency == "EUR"', "data.amount <= 10"])
    assert table.errors.counts == {"over": 1, "small": 1}
    # a false conjunct decides, whatever the other's value: CEL's && is false then, with no error
    evaluated.clear()
    assert table.route(event({"amount": "1500", "currency": "USD"}))[:1] == ()
    assert evaluated == ["data.amount <= 10"]
    assert table.errors.counts == {"over": 1, "small": 2}


PATHS = ["data.a", "data.b"]
NUMBERS = ["0", "1", "-1", "1.5", "2", "0x2", "9007199254740992"]
ATOMS = st.one_of(
    st.builds(
        lambda p, op, lit, flip: f"{lit} {op} {p}" if flip else f"{p} {op} {lit}",
        st.sampled_from(PATHS),
        st.sampled_from(["<", "<=", ">", ">="]),
        st.sampled_from(NUMBERS),
        st.booleans(),
    ),
    st.builds(
        lambda p, lit: f"{p} == {lit}", st.sampled_from(PATHS), st.sampled_from([*NUMBERS, '"1"', "true"])
    ),
    st.builds(lambda p: f'{p} in [1, 2.0, "x"]', st.sampled_from(PATHS)),
    st.sampled_from(["has(data.b)", "data.a != 1", "size(data.a) > 0", "true"]),
)
FILTERS = st.one_of(
    st.lists(ATOMS, min_size=1, max_size=3).map(" && ".join),
    st.lists(ATOMS, min_size=2, max_size=2).map(lambda parts: f"({parts[0]}) || ({parts[1]})"),
)
VALUE = st.one_of(st.sampled_from(VALUES), st.integers(-3, 3), st.floats(-3, 3, allow_nan=False))
PAYLOADS = st.one_of(
    st.fixed_dictionaries({}, optional={"a": VALUE, "b": VALUE}),
    VALUE,
    st.just(b"not json"),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FILTERS, min_size=1, max_size=8), st.lists(PAYLOADS, min_size=1, max_size=5))
def test_deciding_equals_evaluating_every_filter(filters: list[str], payloads: list[Any]) -> None:
    check_same([make_sub(id=f"s{i}", filter_expr=f) for i, f in enumerate(filters)], payloads)
