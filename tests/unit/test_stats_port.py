"""The stats snapshot port: the runtime's snapshot of real lanes, and telemetry (metrics, probes) reading
nothing but a ``StatsSource``."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fanout.model.ports import DispatcherStats, LaneState, MemberState
from fanout.pipeline.counts import SettleCounts
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import LaneLimits
from fanout.pipeline.ordered import KeyedLanes
from fanout.pipeline.route import RoutingTable
from fanout.runtime import stats
from fanout.telemetry.dispatcher_metrics import DispatcherMetrics
from fanout.telemetry.metrics import Metrics
from fanout.telemetry.probes import STATS_STALE_SECONDS, ProbeServer
from tests.unit.factories import make_delivery, make_event, make_sub
from tests.unit.test_settle import Harness, until

# -- the runtime's snapshot -------------------------------------------------------------------------


class Blocked:
    """A ``send`` that never finishes until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, delivery: Any) -> None:
        await self.release.wait()


def member(group: str, lanes: Any, retry_topics: frozenset[str] = frozenset(), **consumer: Any) -> Any:
    joined = threading.Event()
    if consumer.pop("joined", True):
        joined.set()
    fields = {
        "assigned": 2,
        "last_cycle": 100.0,
        "stats": SimpleNamespace(at=50.0, brokers_up=True, lag={("orders", 0): 7}),
    }
    fields.update(consumer)
    return SimpleNamespace(
        group_id=group,
        dispatcher=SimpleNamespace(lanes=lanes, retry_topics=retry_topics),
        consumer=SimpleNamespace(joined=joined, **fields),
    )


async def test_the_runtime_snapshot_reads_lanes_members_counts_and_the_table() -> None:
    send = Blocked()
    harness = Harness()
    lanes = Lanes(send, harness.settler.done, LaneLimits(16, 60.0, 5, 30.0))
    sub = make_sub(id="a", max_in_flight=2)
    lane = lanes.get(sub)
    for i in range(5):
        assert lane.offer(make_delivery(sub, make_event(offset=i))) is None
    keyed = KeyedLanes(send, harness.settler)
    ordered_sub = make_sub(id="o", ordering="key")
    keyed_lane = keyed.get(ordered_sub)
    for i in range(3):
        keyed_lane.offer(make_delivery(ordered_sub, make_event(offset=i)))  # one key: one at a time
    await until(lambda: lane.in_flight == 2 and keyed_lane.in_flight == 1)
    counts = SettleCounts()
    counts.delivered("a")
    counts.poison()
    shared = member("g", lanes, frozenset({"fx.retry.0"}))
    table = RoutingTable.build([sub, make_sub(id="off", enabled=False)])

    snap = stats.snapshot(True, counts, table, shared, [member("g.ordered.o", keyed, joined=False)])

    assert snap.started and snap.subscriptions == 2 and snap.disabled == ("off",)
    # A keyed lane's queue holds the delivery in flight at the head of its key until it settles.
    assert snap.lanes == (LaneState("a", 3, 2, 0, "closed"), LaneState("o", 3, 1, 0, None))
    assert snap.shared == MemberState(
        "g", True, 2, 100.0, 50.0, True, {("orders", 0): 7}, frozenset({"fx.retry.0"})
    )
    assert [m.group for m in snap.members] == ["g", "g.ordered.o"] and not snap.ordered[0].joined
    counts.delivered("a")
    assert snap.outcomes == {("a", "delivered"): 1}, "a snapshot is a copy"
    assert snap.dead_letters == {("", "poison"): 1}
    send.release.set()
    lanes.remove("a")
    keyed.remove("o")


def test_before_the_start_the_snapshot_has_no_members() -> None:
    snap = stats.snapshot(False, SettleCounts(), RoutingTable.build([]), None, [])
    assert (snap.started, snap.shared, snap.members, snap.lanes) == (False, None, (), ())


async def test_a_snapshot_for_the_probes_leaves_the_lanes_out() -> None:
    lanes = Lanes(Blocked(), Harness().settler.done, LaneLimits(16, 60.0, 5, 30.0))
    lanes.get(make_sub(id="a"))
    table = RoutingTable.build([make_sub(id="a")])
    assert len(stats.snapshot(True, SettleCounts(), table, member("g", lanes), []).lanes) == 1
    light = stats.snapshot(True, SettleCounts(), table, member("g", lanes), [], lanes=False)
    assert light.lanes == () and light.shared is not None and light.shared.group == "g"


# -- telemetry reads the port -----------------------------------------------------------------------


def dispatcher_stats(**overrides: Any) -> DispatcherStats:
    shared = MemberState(
        "g",
        True,
        3,
        time.monotonic(),
        0.0,
        False,
        {("orders", 0): 4, ("fx.retry.1", 0): 6},
        frozenset({"fx.retry.0", "fx.retry.1"}),
    )
    values: dict[str, Any] = {
        "started": True,
        "outcomes": {("a", "delivered"): 5, ("b", "delivered"): 2, ("c", "dead_lettered"): 1},
        "dead_letters": {("c", "permanent_failure"): 1, ("", "poison"): 3},
        "lanes": (
            LaneState("a", 4, 2, 9, "closed"),
            LaneState("b", 1, 1, 0, "open"),
            LaneState("c", 2, 0, 1, "half-open"),
            LaneState("o", 6, 1, 0, None),
        ),
        "shared": shared,
        "ordered": (MemberState("g.ordered.o", True, 1, time.monotonic(), 0.0, False, {}, frozenset()),),
        "subscriptions": 4,
        "disabled": ("c",),
    }
    values.update(overrides)
    return DispatcherStats(**values)


class FakeSource:
    def __init__(self, snapshot: DispatcherStats) -> None:
        self.stats = snapshot
        self.calls = 0
        self.lanes: list[bool] = []

    def snapshot(self, lanes: bool = True) -> DispatcherStats:
        self.calls += 1
        self.lanes.append(lanes)
        return self.stats


def scraped(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.scrape().decode())
        for s in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_metrics_come_from_one_snapshot_per_scrape_with_capped_subscription_labels() -> None:
    metrics = Metrics("test")
    source = FakeSource(dispatcher_stats())
    DispatcherMetrics(metrics, source, max_subscription_labels=2)
    try:
        got = scraped(metrics)
        assert source.calls == 1
        assert got[("fanout_deliveries_total", labels(subscription="a", outcome="delivered"))] == 5
        assert got[("fanout_deliveries_total", labels(subscription="b", outcome="delivered"))] == 2
        assert got[("fanout_deliveries_total", labels(subscription="_other", outcome="dead_lettered"))] == 1
        # No subscription label (the exporter writes it empty beside the labelled samples of the family)
        assert got[("fanout_dead_letters_total", labels(subscription="", reason="poison"))] == 3
        assert (
            got[("fanout_dead_letters_total", labels(subscription="_other", reason="permanent_failure"))] == 1
        )
        assert got[("fanout_lane_queued", labels(subscription="a"))] == 4
        assert got[("fanout_lane_queued", labels(subscription="_other"))] == 2 + 6  # c and o
        assert got[("fanout_lane_in_flight", labels(subscription="b"))] == 1
        assert got[("fanout_rate_limit_waits_total", labels(subscription="a"))] == 9
        assert got[("fanout_circuit_state", labels(subscription="b"))] == 2
        assert got[("fanout_circuit_state", labels(subscription="_other"))] == 1  # the worst of c and o
        assert got[("fanout_consumer_lag", labels(group="g", topic="orders", partition="0"))] == 4
        assert got[("fanout_retry_tier_depth", labels(tier="0"))] == 0
        assert got[("fanout_retry_tier_depth", labels(tier="1"))] == 6
        assert got[("fanout_routing_table_subscriptions", labels())] == 4
        assert got[("fanout_subscriptions_disabled", labels())] == 1
        assert got[("fanout_subscription_disabled", labels(subscription="_other"))] == 1
        assert got[("fanout_consumer_assigned_partitions", labels(group="g.ordered.o"))] == 1
        assert 0 <= got[("fanout_poll_loop_age_seconds", labels(group="g"))] < 60
        source.stats = dispatcher_stats(outcomes={("a", "delivered"): 6})
        assert (
            scraped(metrics)[("fanout_deliveries_total", labels(subscription="a", outcome="delivered"))] == 6
        )
        assert source.calls == 2
    finally:
        metrics.shutdown()


def test_metrics_before_the_start_are_empty_but_scrapable() -> None:
    metrics = Metrics("test")
    empty = dispatcher_stats(
        started=False,
        outcomes={},
        dead_letters={},
        lanes=(),
        shared=None,
        ordered=(),
        subscriptions=0,
        disabled=(),
    )
    DispatcherMetrics(metrics, FakeSource(empty), max_subscription_labels=2)
    try:
        got = scraped(metrics)
        assert got[("fanout_routing_table_subscriptions", labels())] == 0
        assert not any(name.startswith("fanout_deliveries") for name, _ in got)
    finally:
        metrics.shutdown()


def probe(snapshot: DispatcherStats) -> ProbeServer:
    return ProbeServer(FakeSource(snapshot), Metrics("test"), "127.0.0.1", 0, stall_timeout=10)


def shared(**overrides: Any) -> MemberState:
    values: dict[str, Any] = {
        "group": "g",
        "joined": True,
        "assigned": 3,
        "last_cycle": time.monotonic(),
        "statistics_at": time.monotonic(),
        "brokers_up": True,
        "lag": {},
        "retry_topics": frozenset(),
    }
    values.update(overrides)
    return MemberState(**values)


def test_probes_while_starting() -> None:
    server = probe(dispatcher_stats(started=False, shared=None, ordered=()))
    assert server.health() == (True, {"status": "starting"})
    assert server.readiness() == (False, {"status": "starting"})


def test_probes_when_everything_is_fine() -> None:
    source = FakeSource(dispatcher_stats(shared=shared(), ordered=()))
    server = ProbeServer(source, Metrics("test"), "127.0.0.1", 0, stall_timeout=10)
    assert server.health()[0]
    assert server.readiness() == (True, {"status": "ok", "group": "g", "partitions": 3})
    assert source.lanes == [False, False]  # one snapshot a probe, without the lanes


def test_a_stalled_poll_loop_fails_both_probes_naming_its_group() -> None:
    stalled = shared(group="g.ordered.o", last_cycle=time.monotonic() - 30)
    server = probe(dispatcher_stats(shared=shared(), ordered=(stalled,)))
    for ok, detail in (server.health(), server.readiness()):  # each reads the clock anew
        assert not ok and detail["status"] == "poll loop stalled" and detail["groups"] == ["g.ordered.o"]
        assert detail["seconds_since_cycle"]["g.ordered.o"] >= 30


@pytest.mark.parametrize(
    ("overrides", "ready", "status"),
    [
        ({"joined": False}, False, "not joined"),
        ({"brokers_up": False}, False, "no broker connection"),
        ({"brokers_up": False, "statistics_at": 0.0}, True, "ok"),  # no statistics yet: joining suffices
        ({"brokers_up": False, "statistics_at": -STATS_STALE_SECONDS - 1}, True, "ok"),  # stale statistics
    ],
)
def test_readiness_needs_the_group_joined_and_a_broker_connection(
    overrides: dict[str, Any], ready: bool, status: str
) -> None:
    if overrides.get("statistics_at", 0.0) < 0:
        overrides["statistics_at"] += time.monotonic()
    ok, body = probe(dispatcher_stats(shared=shared(**overrides), ordered=())).readiness()
    assert (ok, body["status"]) == (ready, status)
