from __future__ import annotations

from typing import Any

import pytest

from fanout.model.subscription import Subscription
from fanout.pipeline.decode import decode
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_event, make_sub


def ids(subs: tuple[Subscription, ...]) -> list[str]:
    return sorted(s.id for s in subs)


def table(*subs: Subscription) -> RoutingTable:
    return RoutingTable.build(subs)


class CountingAttributes(dict[str, str]):
    """Event attributes that count lookups: a measure of how many filters routing examined."""

    lookups = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.lookups += 1
        return super().get(key, default)


def test_exact_type() -> None:
    t = table(make_sub(id="a", events=["user.created"]), make_sub(id="b", events=["user.deleted"]))
    assert ids(t.route(make_event(type="user.created", topic="orders"))) == ["a"]
    assert ids(t.route(make_event(type="user.updated", topic="orders"))) == []


@pytest.mark.parametrize(
    ("event_type", "matches"),
    [
        ("user.created", True),
        ("user.x.y", True),
        ("users.created", False),
        ("user", False),
        ("admin.user.created", False),
        ("userx.created", False),
    ],
)
def test_prefix_wildcard(event_type: str, matches: bool) -> None:
    t = table(make_sub(id="users", events=["user.*"]))
    assert ids(t.route(make_event(type=event_type))) == (["users"] if matches else [])


def test_deep_prefix_wildcard() -> None:
    t = table(make_sub(id="deep", events=["a.b.c.*"]), make_sub(id="shallow", events=["a.*"]))
    assert ids(t.route(make_event(type="a.b.c.d"))) == ["deep", "shallow"]
    assert ids(t.route(make_event(type="a.b.cd"))) == ["shallow"]
    assert ids(t.route(make_event(type="a.b.c"))) == ["shallow"]


def test_star_matches_every_type_of_its_topics() -> None:
    t = table(make_sub(id="all", events=["*"]))
    assert ids(t.route(make_event(type="anything"))) == ["all"]
    assert ids(t.route(make_event(type="a.b.c"))) == ["all"]
    assert ids(t.route(make_event(type="x", topic="payments"))) == []


def test_default_events_pattern_is_star() -> None:
    t = table(make_sub(id="default"))
    assert ids(t.route(make_event(type="whatever"))) == ["default"]


def test_topic_scoping() -> None:
    t = table(
        make_sub(id="orders-only", topics=["orders"], events=["created"]),
        make_sub(id="both", topics=["orders", "payments"], events=["created"]),
    )
    assert ids(t.route(make_event(type="created", topic="orders"))) == ["both", "orders-only"]
    assert ids(t.route(make_event(type="created", topic="payments"))) == ["both"]
    assert t.route(make_event(type="created", topic="unknown")) == ()
    assert t.topics == frozenset({"orders", "payments"})


def test_single_attribute_filter() -> None:
    t = table(
        make_sub(id="acme", filter={"tenant": "acme"}),
        make_sub(id="globex", filter={"tenant": "globex"}),
        make_sub(id="everyone"),
    )
    assert ids(t.route(make_event(attributes={"tenant": "acme"}))) == ["acme", "everyone"]
    assert ids(t.route(make_event(attributes={"tenant": "initech"}))) == ["everyone"]
    assert ids(t.route(make_event(attributes={}))) == ["everyone"]


def test_several_attribute_filter_needs_every_attribute() -> None:
    t = table(make_sub(id="acme-eu", filter={"tenant": "acme", "region": "eu"}))
    assert ids(t.route(make_event(attributes={"tenant": "acme", "region": "eu", "x": "y"}))) == ["acme-eu"]
    assert ids(t.route(make_event(attributes={"tenant": "acme", "region": "us"}))) == []
    assert ids(t.route(make_event(attributes={"tenant": "acme"}))) == []
    assert ids(t.route(make_event(attributes={"region": "eu"}))) == []


def test_filters_match_kafka_headers_and_cloudevents_attributes() -> None:
    t = table(
        make_sub(id="by-header", filter={"tenant": "acme"}),
        make_sub(id="by-source", filter={"source": "/billing"}),
    )
    from_header = decode("orders", 0, 1, None, b'{"event": "x"}', [("tenant", b"acme")], 0.0)
    assert ids(t.route(from_header)) == ["by-header"]
    binary = decode("orders", 0, 2, None, b"{}", [("ce_type", b"x"), ("ce_tenant", b"acme")], 0.0)
    assert ids(t.route(binary)) == ["by-header"]
    structured = decode(
        "orders", 0, 3, None, b'{"specversion": "1.0", "type": "x", "source": "/billing"}', [], 0.0
    )
    assert ids(t.route(structured)) == ["by-source"]


def test_filters_apply_to_every_pattern_kind() -> None:
    t = table(
        make_sub(id="exact", events=["user.created"], filter={"tenant": "acme"}),
        make_sub(id="prefix", events=["user.*"], filter={"tenant": "acme"}),
        make_sub(id="star", events=["*"], filter={"tenant": "acme"}),
    )
    assert ids(t.route(make_event(type="user.created", attributes={"tenant": "acme"}))) == [
        "exact",
        "prefix",
        "star",
    ]
    assert t.route(make_event(type="user.created", attributes={"tenant": "globex"})) == ()


def test_a_subscription_matched_by_several_patterns_is_routed_once() -> None:
    sub = make_sub(id="greedy", events=["user.created", "user.*", "*", "user.created"])
    routed = table(sub).route(make_event(type="user.created"))
    assert routed == (sub,)


def test_several_matches_keep_distinct_subscriptions() -> None:
    a, b = make_sub(id="a", events=["user.*"]), make_sub(id="b", events=["*", "user.*"])
    routed = table(a, b).route(make_event(type="user.created"))
    assert len(routed) == 2 and {s.id for s in routed} == {"a", "b"}


def test_disabled_subscriptions_are_still_routed() -> None:
    """The dispatcher dead-letters their events with reason 'subscription disabled'."""
    disabled = make_sub(id="off", enabled=False, disabled_reason="410")
    assert table(disabled).route(make_event()) == (disabled,)


def test_later_version_of_an_id_replaces_earlier() -> None:
    old = make_sub(id="s", events=["a"], version=1)
    new = make_sub(id="s", events=["b"], version=2)
    t = table(old, new)
    assert len(t) == 1 and t.get("s") is new
    assert t.route(make_event(type="a")) == ()
    assert t.route(make_event(type="b")) == (new,)
    assert t.get("missing") is None


def test_empty_table_routes_nothing() -> None:
    t = RoutingTable.build([])
    assert len(t) == 0 and t.route(make_event()) == ()


# -- cost: O(matches), not O(subscriptions) ------------------------------------------------------


def tenant_table(n: int, extra_filter: dict[str, str] | None = None) -> RoutingTable:
    return RoutingTable.build(
        make_sub(id=f"hook-{i}", events=["order.created"], filter={"tenant": f"t{i}", **(extra_filter or {})})
        for i in range(n)
    )


def test_ten_thousand_tenants_route_to_exactly_one() -> None:
    t = tenant_table(10_000)
    for i in (0, 4_321, 9_999):
        attributes = CountingAttributes(tenant=f"t{i}")
        routed = t.route(make_event(type="order.created", attributes=attributes))
        assert [s.id for s in routed] == [f"hook-{i}"]
        assert attributes.lookups <= 2
    assert t.route(make_event(type="order.created", attributes={"tenant": "nobody"})) == ()


def test_routing_many_events_examines_a_constant_number_of_filters() -> None:
    t = tenant_table(10_000)
    total_lookups = 0
    for i in range(10_000):
        attributes = CountingAttributes(tenant=f"t{i}", region="eu")
        assert len(t.route(make_event(type="order.created", attributes=attributes))) == 1
        total_lookups += attributes.lookups
    assert total_lookups <= 2 * 10_000


def test_tenant_filters_with_a_shared_attribute_still_cost_o_matches() -> None:
    """Every subscription also filters on region=eu: the tenant, not the shared region, must index them."""
    t = tenant_table(10_000, extra_filter={"region": "eu"})
    attributes = CountingAttributes(tenant="t77", region="eu")
    routed = t.route(make_event(type="order.created", attributes=attributes))
    assert [s.id for s in routed] == ["hook-77"]
    assert attributes.lookups <= 4
