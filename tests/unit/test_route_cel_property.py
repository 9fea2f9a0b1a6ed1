"""Property: the indexed router with CEL filters selects exactly what a naive router selects when it
checks every subscription's topic, event pattern, attribute filter and ``filter_expr`` one by one."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.model.event import Event
from fanout.model.subscription import Subscription
from fanout.pipeline.expressions import Bindings, EvaluationError, passes
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub

TOPICS = ["orders", "payments"]
TYPES = ["order.created", "order.paid", "order.item.added", "payment.failed", "user"]
PATTERNS = ["*", "order.*", "order.item.*", "order.created", "payment.failed", "user", "payment.*"]
ATTRIBUTES = {"tenant": ["t1", "t2"], "region": ["eu", "us"]}
FILTERS = [
    None,
    "data.amount > 100",
    'data.amount > 100 && data.currency == "EUR"',
    'data.region in ["eu", "us"]',
    "has(data.customer.tier)",
    'data.customer.tier == "gold" || data.amount < 10',
    '"vip" in data.tags',
    "data.items.exists(i, i.qty > 2)",
    'timestamp(data.at) > timestamp("2026-01-01T00:00:00Z")',
    'event.attributes.tenant == "t1"',
    'headers["x-source"] == "shop"',
    'event.type.startsWith("order.") && size(key) > 0',
    "data.amount",  # not a boolean: always an error, never a match
]

subscriptions = st.lists(
    st.fixed_dictionaries(
        {
            "topics": st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2, unique=True),
            "events": st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True),
            "filter": st.dictionaries(
                st.sampled_from(sorted(ATTRIBUTES)), st.sampled_from(["t1", "t2", "eu", "us"]), max_size=2
            ),
            "filter_expr": st.sampled_from(FILTERS),
        }
    ),
    max_size=12,
)

payloads = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.one_of(st.integers(-5, 500), st.floats(-5, 500, allow_nan=False), st.text(max_size=2)),
        "currency": st.sampled_from(["EUR", "USD"]),
        "region": st.sampled_from(["eu", "us", "apac"]),
        "customer": st.fixed_dictionaries({}, optional={"tier": st.sampled_from(["gold", "basic"])}),
        "tags": st.lists(st.sampled_from(["vip", "new"]), max_size=2),
        "items": st.lists(st.fixed_dictionaries({"qty": st.integers(0, 5)}), max_size=3),
        "at": st.sampled_from(["2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z", "not a time"]),
    },
)

events = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(TOPICS),
        "type": st.sampled_from(TYPES),
        "attributes": st.dictionaries(
            st.sampled_from(sorted(ATTRIBUTES)), st.sampled_from(["t1", "t2", "eu", "us"]), max_size=2
        ),
        "data": payloads,
        "source_header": st.booleans(),
    }
)


def build(spec: dict[str, Any], i: int) -> Subscription:
    fields = {k: v for k, v in spec.items() if v is not None}
    return make_sub(id=f"s{i}", **fields)


def make_event(spec: dict[str, Any]) -> Event:
    headers = [("x-source", b"shop")] if spec["source_header"] else []
    attributes = dict(spec["attributes"])
    if spec["source_header"]:
        attributes["x-source"] = "shop"
    return Event(
        id="e",
        type=spec["type"],
        topic=spec["topic"],
        partition=0,
        offset=0,
        key=b"k",
        time=1_780_000_000.0,
        value=orjson.dumps(spec["data"]),
        headers=headers,
        attributes=attributes,
    )


def pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def naive(subs: list[Subscription], event: Event) -> set[str]:
    chosen = set()
    for sub in subs:
        if event.topic not in sub.topics or not any(pattern_matches(p, event.type) for p in sub.events):
            continue
        if any(event.attributes.get(k) != v for k, v in sub.filter.items()):
            continue
        if sub.filter_program is not None:
            try:
                if not passes(sub.filter_program, Bindings(event)):
                    continue
            except EvaluationError:
                continue
        chosen.add(sub.id)
    return chosen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subscriptions, st.lists(events, min_size=1, max_size=5))
def test_indexed_then_cel_equals_naive(
    specs: list[dict[str, Any]], event_specs: list[dict[str, Any]]
) -> None:
    subs = [build(spec, i) for i, spec in enumerate(specs)]
    table = RoutingTable.build(subs)
    for spec in event_specs:
        # separate events: each router parses its own copy of the payload
        assert {s.id for s in table.route(make_event(spec))} == naive(subs, make_event(spec))
