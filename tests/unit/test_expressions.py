"""CEL filters and transforms: compile errors with positions, the static limits, evaluation semantics
(no match on error), lazy payload parsing and the transform's JSON body."""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson
import pytest

from fanout.model.event import Event
from fanout.model.expressions.limits import MAX_CONCATENATIONS, MAX_MAPPED_LIST
from fanout.pipeline.expressions import (
    Bindings,
    CompileError,
    EvaluationError,
    FilterErrors,
    TransformFailed,
    compile_expression,
    passes,
    render,
)
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub

ORDER = {
    "amount": 1500,
    "currency": "EUR",
    "region": "eu",
    "customer": {"id": "c-1", "tier": "gold", "tags": ["vip", "b2b"]},
    "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
    "placed": "2026-03-01T12:00:00Z",
    "ratio": 0.25,
}


def event(data: Any = ORDER, parsed: bool = True, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "id": "evt-1",
        "type": "order.created",
        "topic": "orders",
        "partition": 0,
        "offset": 7,
        "key": b"customer-1",
        "time": 1_772_366_400.0,  # 2026-03-01T12:00:00Z
        "value": orjson.dumps(data),
        "headers": [("X-Tenant", b"t1"), ("ce_type", b"order.created")],
        "attributes": {"source": "shop", "tenant": "t1"},
        "data": data if parsed else None,
        "data_parsed": parsed,
    }
    values.update(fields)
    return Event(**values)


def check(source: str, ev: Event | None = None) -> bool:
    return passes(compile_expression("filter_expr", source), Bindings(ev or event()))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('data.amount > 1000 && data.currency == "EUR"', True),
        ('data.amount > 1000.0 && data.currency == "USD"', False),
        ('data.region in ["eu", "us"]', True),
        ('data.region in ["apac"]', False),
        ("has(data.customer.tier)", True),
        ("has(data.customer.vat)", False),
        ('"vip" in data.customer.tags', True),
        ('data.items.exists(i, i.qty > 1 && i.sku == "a")', True),
        ("data.items.all(i, i.qty > 1)", False),
        ('data.currency == "USD" || data.customer.tier == "gold"', True),
        ('timestamp(data.placed) > timestamp("2026-01-01T00:00:00Z")', True),
        ('timestamp(event.time) - duration("1h") < timestamp("2026-03-01T12:00:00Z")', True),
        ('event.type == "order.created" && event.source == "shop" && event.topic == "orders"', True),
        ('event.attributes.tenant == "t1" && headers["x-tenant"] == "t1"', True),
        ('key.startsWith("customer-")', True),
        ("data.ratio < 0.5 && size(data.items) == 2", True),
        ('data.items.map(i, i.sku) == ["a", "b"]', True),
    ],
)
def test_filters_over_fields_numbers_strings_lists_and_times(source: str, expected: bool) -> None:
    assert check(source) is expected


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("data.missing > 1", "not found"),
        ('data.amount > "x"', "No matching overloads"),
        ("data.amount", "returned int, not a boolean"),
        ("data.customer.tags[5] == 1", "index"),
    ],
)
def test_evaluation_errors_raise_with_a_one_line_reason(source: str, words: str) -> None:
    with pytest.raises(EvaluationError) as caught:
        check(source)
    assert words.lower() in str(caught.value).lower()
    assert "\n" not in str(caught.value)


def test_short_circuits_absorb_errors_as_cel_defines() -> None:
    assert check('data.currency == "USD" && data.missing > 1') is False
    assert check('data.currency == "EUR" || data.missing > 1') is True


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        ("data.amount >", 1, 14, "Syntax error"),
        ("has(data.a) &&\n  dta.b == 1", 2, 6, "undeclared reference to 'dta"),
        ("headers.x > 1", 1, 11, "no matching overload"),
        ("data.items.all(i, i.qty < size(data.items))", 1, 32, "only its variable 'i'"),
        ("data.l.all(x, x.t.all(y, y > x))", 1, 30, "not 'x'"),
        ('data.l.all(x, key == "k")', 1, 15, "not 'key'"),
    ],
)
def test_compile_errors_carry_a_position(source: str, line: int, column: int, words: str) -> None:
    with pytest.raises(CompileError) as caught:
        compile_expression("filter_expr", source)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert words in caught.value.message
    assert str(caught.value).startswith(f"line {line}, column {column}: ")


def test_limits_on_length_and_concatenation() -> None:
    with pytest.raises(CompileError, match="longer than 2048"):
        compile_expression("filter_expr", "true && " * 300 + "true")
    chain = " + ".join(["data.s"] * (MAX_CONCATENATIONS + 2))
    with pytest.raises(CompileError, match="'\\+' operators"):
        compile_expression("transform", chain)
    compile_expression("transform", " + ".join(["data.s"] * (MAX_CONCATENATIONS + 1)))


def test_the_body_check_reads_strings_and_comments_as_such() -> None:
    ok = compile_expression(
        "filter_expr", 'data.items.exists(i, i.sku == "data" && i.sku != r"\\key") // data here'
    )
    assert ok.uses_data and not ok.builds_lists
    assert not compile_expression("filter_expr", 'key == "data"').uses_data
    assert compile_expression("transform", "data.items.filter(i, i.qty > 1)").builds_lists


def test_maps_and_filters_refuse_long_lists() -> None:
    program = compile_expression("filter_expr", "size(data.l.map(x, x)) > 0")
    assert passes(program, Bindings(event({"l": list(range(MAX_MAPPED_LIST))})))
    with pytest.raises(EvaluationError, match="map\\(\\) and filter\\(\\) take at most"):
        passes(program, Bindings(event({"l": [[0] * (MAX_MAPPED_LIST + 1)]})))
    assert check("data.l.exists(x, x == 5)", event({"l": list(range(5000))}))  # exists is not limited


def test_the_iteration_budget_stops_nested_loops() -> None:
    nested = compile_expression("filter_expr", "data.l.all(x, [1, 2, 3, 4].all(y, y > 0))")
    assert passes(nested, Bindings(event({"l": list(range(1500))})))
    with pytest.raises(EvaluationError, match="budget"):
        passes(nested, Bindings(event({"l": list(range(3000))})))


def test_the_payload_is_parsed_only_for_expressions_that_read_it_and_then_once() -> None:
    ev = event(parsed=False)
    bindings = Bindings(ev)
    assert passes(compile_expression("filter_expr", 'event.type == "order.created"'), bindings)
    assert not ev.data_parsed
    assert passes(compile_expression("filter_expr", "data.amount == 1500"), bindings)
    assert ev.data_parsed and ev.data == ORDER
    ev.value = b"{}"  # a second parse would see this
    assert passes(compile_expression("filter_expr", 'data.region == "eu"'), bindings)


def test_binary_mode_text_payloads_are_strings() -> None:
    ev = event(parsed=False, value=b"plain text")
    assert check('data == "plain text"', ev)


def test_filter_errors_are_counted_and_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    errors = FilterErrors(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "fanout.filters"):
        for _ in range(3):
            errors.record("s1", "no such key")
        now[0] = 61.0
        errors.record("s1", "no such key")
        errors.record("s2", "other")
    assert errors.counts == {"s1": 4, "s2": 1}
    assert [r.getMessage().split(" ")[3] for r in caplog.records] == ["s1", "s1", "s2"]
    errors.forget({"s1"})
    assert errors.counts == {"s2": 1}


def test_routing_applies_filters_to_candidates_and_counts_errors() -> None:
    subs = [
        make_sub(id="big", filter_expr="data.amount > 1000"),
        make_sub(id="small", filter_expr="data.amount <= 1000"),
        make_sub(id="broken", filter_expr="data.nope == 1"),
        make_sub(id="plain"),
        make_sub(id="elsewhere", topics=["payments"], filter_expr="data.nope == 1"),
    ]
    table = RoutingTable.build(subs)
    assert sorted(s.id for s in table.route(event())) == ["big", "plain"]
    assert table.errors.counts == {"broken": 1}  # "elsewhere" was never a candidate


def test_an_unfiltered_table_never_parses_the_payload() -> None:
    ev = event(parsed=False)
    assert [s.id for s in RoutingTable.build([make_sub()]).route(ev)] == ["hook-1"]
    assert not ev.data_parsed


def body(source: str, ev: Event | None = None, max_bytes: int = 1 << 20) -> Any:
    return orjson.loads(render(compile_expression("transform", source), ev or event(), max_bytes))


def test_a_transform_builds_the_body_from_event_and_data() -> None:
    assert body('{"type": event.type, "payload": data}') == {"type": "order.created", "payload": ORDER}
    assert body("data") == ORDER
    assert body("data.items.map(i, i.sku)") == ["a", "b"]


def test_transform_values_become_json() -> None:
    out = body(
        '{"t": timestamp("2026-01-02T03:04:05.5Z"), "d": duration("-1.5s"), "b": b"\\x00\\xff", '
        '"u": 3u, "f": 2.5, "n": null, "s": "x", "ok": true, "l": [1, "a"], "whole": duration("90s")}'
    )
    assert out == {
        "t": "2026-01-02T03:04:05.500000Z",
        "d": "-1.5s",
        "b": base64.b64encode(b"\x00\xff").decode(),
        "u": 3,
        "f": 2.5,
        "n": None,
        "s": "x",
        "ok": True,
        "l": [1, "a"],
        "whole": "90s",
    }


def test_transform_bodies_are_deterministic() -> None:
    program = compile_expression("transform", '{"z": 1, "a": 2, "m": {"y": 1, "b": 2}}')
    first = render(program, event())
    assert first == b'{"a":2,"m":{"b":2,"y":1},"z":1}'
    assert all(render(program, event()) == first for _ in range(5))


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("data.missing", "not found"),
        ("{1: 2}", "map key is int"),
        ("1.0 / 0.0", "cannot be written as JSON"),
        ("[data, data, data, data, data, data, data, data]", "larger than the transform limit"),
        ("type(data)", "cannot be written as JSON"),
    ],
)
def test_failing_transforms_raise_with_a_reason(source: str, words: str) -> None:
    with pytest.raises(TransformFailed, match=words):
        render(compile_expression("transform", source), event(), max_bytes=1024)


def test_the_size_cap_stops_early_on_repeated_large_values() -> None:
    big = {"s": "x" * 100_000, "l": list(range(400))}
    program = compile_expression("transform", "data.l.map(i, data.s)".replace("data.s", "i"))
    assert len(render(program, event(big), 1 << 20)) < 10_000
    repeated = compile_expression("transform", "[" + ", ".join(["data"] * 200) + "]")
    with pytest.raises(TransformFailed, match="larger than"):
        render(repeated, event(big), 1 << 20)


def test_a_routes_file_with_a_bad_expression_is_refused_naming_where(tmp_path: Any) -> None:
    from fanout.config import DeliverySettings
    from fanout.control.routes import load_routes
    from fanout.model.errors import ValidationFailed

    path = tmp_path / "routes.yaml"
    path.write_text(
        "subscriptions:\n"
        "  - id: orders\n"
        "    url: https://hooks.example.com/in\n"
        "    topics: [orders]\n"
        "    secrets: [whsec_" + "A" * 32 + "]\n"
        "    filter_expr: |\n"
        "      data.amount > 1000 &&\n"
        "      data.currency = 'EUR'\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        load_routes(path, DeliverySettings())
    assert caught.value.where == "orders.filter_expr"
    assert caught.value.message.startswith("line 2, column ")
