"""Chaos against the suite's own three-broker cluster: a dispatcher cut off from the brokers for longer
than its session timeout, an endpoint behind a 60 s blackhole, and a rolling restart of every broker
while 20,000 events flow. Each reports lost (must be 0), duplicates (bounded) and the time delivery
took to resume; the figures are in docs/delivery.md, "Chaos tests"."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from fanout.config import KafkaSettings, Settings
from tests.chaos.conftest import ChaosCluster
from tests.chaos.netns import Namespace
from tests.chaos.scenario import (
    Outcome,
    PacedProducer,
    first_deliveries,
    longest_gap,
    resumed_after,
    tally,
)
from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    group_members,
    subscription,
)
from tests.receivers import Receiver

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

CHAOS_NET = ipaddress.ip_network("10.213.0.0/16")
SESSION_MS = 6000


def cluster_settings(bootstrap: str, unique: str, **sections: Any) -> Settings:
    dispatcher = {"session_timeout_ms": SESSION_MS, **sections.pop("dispatcher", {})}
    delivery = {
        "allow_cidrs": [CHAOS_NET, ipaddress.ip_network("127.0.0.0/8")],
        **sections.pop("delivery", {}),
    }
    return engine_settings(
        bootstrap,
        unique,
        topics={"replication_factor": 3, "min_insync_replicas": 2},
        dispatcher=dispatcher,
        delivery=delivery,
        **sections,
    )


def local(settings: Settings, cluster: ChaosCluster) -> Settings:
    """The same settings for the test's own clients, which reach the cluster on 127.0.0.1."""
    return settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers=cluster.bootstrap)})


def reachable_from_namespaces(cluster: ChaosCluster) -> tuple[str, str]:
    """(anchor address, external bootstrap servers) of the cluster: a namespace routes the anchor
    through its own link to the brokers."""
    if cluster.anchor is None or cluster.external is None:
        pytest.fail("the chaos cluster has no external listener although namespaces work")
    return cluster.anchor, cluster.external


async def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` (a blocking call, run in a thread) until true; returns when (time.time())."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(0.5)  # polling the broker with a deadline
    return time.time()


async def test_dispatcher_cut_off_from_the_brokers_longer_than_its_session(
    chaos_cluster: ChaosCluster, namespace: Namespace, unique: str, tmp_path: Path, chaos_report: Any
) -> None:
    anchor, external = reachable_from_namespaces(chaos_cluster)
    to_brokers = namespace.link("b", (anchor,))
    to_endpoint = namespace.link("e")
    partitions, bound, n, rate, cut_for, loss = 3, 200, 2400, 80.0, 15.0, 0.05
    settings = cluster_settings(
        external, unique, partitions=partitions, dispatcher={"max_uncommitted": bound}
    )
    mine = local(settings, chaos_cluster)
    topic = f"{unique}.events"
    await asyncio.to_thread(create_engine_topics, mine, [topic])
    async with Receiver(host=to_endpoint.root_ip) as receiver:
        await apply(mine, [subscription("all", receiver.url, [topic])])
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log", wrap=namespace.command)
        producer = PacedProducer(mine, topic, events(n), rate)
        try:
            # A lossy network throughout (5% of the packets dropped, both links, both ways) ...
            to_brokers.loss(loss)
            to_endpoint.loss(loss)
            process.start()
            producer.start()
            await receiver.wait_count(n // 6, 60)
            # ... and for cut_for seconds nothing gets through to the brokers at all.
            to_brokers.blackhole()
            cut_at = time.time()
            # The group coordinator must evict the member: that is what "longer than its session" means.
            evicted_at = await wait_until(lambda: group_members(mine) == 0, 45, "the member's eviction")
            await asyncio.sleep(max(0.0, cut_at + cut_for - time.time()))  # the cut lasts cut_for seconds
            delivered_in_cut = sum(1 for r in receiver.requests if r.at >= cut_at)
            to_brokers.loss(loss)
            healed_at = time.time()
            await asyncio.to_thread(producer.join, 120)
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 120)
            assert process.proc is not None and process.proc.poll() is None, "the dispatcher rode it out"
        except BaseException:
            print(process.log()[-8000:])
            raise
        finally:
            process.close()
    lost, duplicates = tally(receiver.requests, {f"e{i}" for i in range(n)})
    outcome = Outcome(
        f"dispatcher cut off from the brokers (blackhole) for {cut_for:.0f}s, session timeout "
        f"{SESSION_MS / 1000:.0f}s, {loss:.0%} packet loss before and after",
        n,
        lost,
        duplicates,
        bound * partitions,
        resumed_after(receiver.requests, healed_at),
        # librdkafka's, not fanout's: requests sent into the blackhole wait up to socket.timeout.ms (60 s)
        # and reconnects back off up to 10 s; the rejoin waits for them (measured 12-40 s).
        70.0,
        {
            "evicted after": f"{evicted_at - cut_at:.1f}s",
            "delivered while cut off (records fetched before)": str(delivered_in_cut),
        },
    )
    chaos_report(outcome)
    outcome.check()


async def test_endpoint_blackholed_for_60s(
    chaos_cluster: ChaosCluster, namespace: Namespace, unique: str, tmp_path: Path, chaos_report: Any
) -> None:
    anchor, external = reachable_from_namespaces(chaos_cluster)
    to_brokers = namespace.link("b", (anchor,))
    to_endpoint = namespace.link("e")
    n, rate, blackhole_for, in_flight = 1200, 20.0, 60.0, 8
    settings = cluster_settings(
        external, unique, delivery={"breaker_cooldown": 2, "breaker_max_cooldown": 10}
    )
    mine = local(settings, chaos_cluster)
    topic = f"{unique}.events"
    await asyncio.to_thread(create_engine_topics, mine, [topic])
    # The healthy subscriber is reached over the brokers' link, which stays up.
    async with Receiver(host=to_endpoint.root_ip) as stuck, Receiver(host=to_brokers.root_ip) as healthy:
        patient = {"schedule": [1, 2, 4, 8] + [10] * 20, "max_age": 900}
        await apply(
            mine,
            [
                subscription("stuck", stuck.url, [topic], timeout=2, max_in_flight=in_flight, retry=patient),
                subscription("healthy", healthy.url, [topic]),
            ],
        )
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log", wrap=namespace.command)
        try:
            process.start()
            await asyncio.to_thread(PacedProducer(mine, topic, [events(1)[0]], 1).start().join, 30)
            await stuck.wait_count(1, 60)
            await healthy.wait_count(1, 60)
            to_endpoint.blackhole()
            blackholed_at = time.time()
            producer = PacedProducer(mine, topic, events(n, start=1), rate).start()
            await asyncio.sleep(blackhole_for)  # the fault's duration
            during = sum(1 for r in stuck.requests if r.at > blackholed_at)
            dropped = to_endpoint.dropped()
            to_endpoint.heal()
            healed_at = time.time()
            await asyncio.to_thread(producer.join, 60)
            ids = {f"e{i}" for i in range(n + 1)}
            await healthy.wait_for(lambda reqs: {r.headers["webhook-id"] for r in reqs} >= ids, 60)
            await stuck.wait_for(lambda reqs: {r.headers["webhook-id"] for r in reqs} >= ids, 120)
            assert process.proc is not None and process.proc.poll() is None
        except BaseException:
            print(process.log()[-8000:])
            raise
        finally:
            process.close()
    assert during == 0 and dropped > 0, f"the blackhole let {during} requests through (dropped {dropped})"
    lags = sorted(
        r.at - producer.scheduled(int(r.headers["webhook-id"][1:]) - 1)
        for r in healthy.requests
        if r.headers["webhook-id"] != "e0"
    )
    healthy_lost, healthy_duplicates = tally(healthy.requests, ids)
    p99, worst = lags[int(len(lags) * 0.99)], lags[-1]
    lost, duplicates = tally(stuck.requests, ids)
    outcome = Outcome(
        "endpoint blackholed for 60s (timeout 2s, breaker cool-down 2-10s)",
        n + 1,
        lost,
        duplicates,
        in_flight,
        resumed_after(stuck.requests, healed_at),
        30.0,
        {
            "healthy subscriber": f"lost {healthy_lost}, duplicates {healthy_duplicates}, "
            f"latency p99 {p99:.2f}s max {worst:.2f}s",
            "all delivered after heal": f"{max(r.at for r in stuck.requests) - healed_at:.1f}s",
        },
    )
    chaos_report(outcome)
    outcome.check()
    assert healthy_lost == 0 and healthy_duplicates == 0
    assert worst < 10, f"the healthy subscriber waited {worst:.1f}s for an event while the other was stuck"


def fully_replicated(bootstrap: str) -> bool:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    if len(metadata.brokers) < 3:
        return False
    return all(
        len(p.isrs) == len(p.replicas) and p.leader >= 0
        for t in metadata.topics.values()
        for p in t.partitions.values()
    )


async def test_rolling_restart_of_every_broker_while_events_flow(
    chaos_cluster: ChaosCluster, unique: str, tmp_path: Path, chaos_report: Any
) -> None:
    partitions, bound, n, rate = 3, 500, 20_000, 250.0
    settings = cluster_settings(
        chaos_cluster.bootstrap,
        unique,
        partitions=partitions,
        dispatcher={"max_uncommitted": bound},
    )
    topic = f"{unique}.events"
    await asyncio.to_thread(create_engine_topics, settings, [topic])
    restarts: list[tuple[int, float, float]] = []
    async with Receiver() as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic])])
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        producer = PacedProducer(settings, topic, events(n), rate)
        try:
            process.start()
            producer.start()
            await receiver.wait_count(1000, 60)
            for node in (1, 2, 3):
                stopped_at = time.time()
                await asyncio.to_thread(chaos_cluster.kafka, "stop", "--node", str(node))
                await asyncio.to_thread(chaos_cluster.kafka, "start")
                await wait_until(lambda: fully_replicated(chaos_cluster.bootstrap), 90, "full replication")
                restarts.append((node, stopped_at, time.time()))
            await asyncio.to_thread(producer.join, 180)
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 120)
            assert process.proc is not None and process.proc.poll() is None
        except BaseException:
            print(process.log()[-8000:])
            raise
        finally:
            process.close()
    lost, duplicates = tally(receiver.requests, {f"e{i}" for i in range(n)})
    begin, end = restarts[0][1], restarts[-1][2]
    # Fanout's pause: the longest an event the brokers had acknowledged (once the restarts began) waited
    # for its delivery. Gaps in the producer's acknowledgements (the brokers' own pause) are shown beside.
    delivered = first_deliveries(receiver.requests)
    waits = [
        delivered[f"e{i}"] - acked
        for i, acked in enumerate(producer.acked)
        if acked is not None and acked >= begin and f"e{i}" in delivered
    ]
    acks = [a for a in producer.acked if a is not None and begin <= a <= end]
    deliveries = [t for t in delivered.values() if begin <= t <= end]
    outcome = Outcome(
        "rolling restart of 3 brokers (SIGTERM, start, wait for full ISR) at 250 events/s",
        n,
        lost,
        duplicates,
        bound * partitions,
        max(waits, default=None),
        30.0,
        {
            "(resumed after": "the longest an acknowledged event waited for its delivery)",
            "restarts took": ", ".join(f"node {i} {t1 - t0:.0f}s" for i, t0, t1 in restarts),
            "longest gap in deliveries": f"{longest_gap([begin, end, *deliveries]):.1f}s",
            "in the producer's acknowledgements": f"{longest_gap([begin, end, *acks]):.1f}s",
        },
    )
    chaos_report(outcome)
    try:
        outcome.check()
    except AssertionError:
        print(process.log()[-8000:])
        raise
