"""Failures: retries through the tiers, tier order, permanent failures, 410, ops events, poison records."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import orjson
import pytest
from aiohttp import web

from fanout.control.subscriptions import SubscriptionStore
from fanout.kafka import consumer as consumer_module
from fanout.pipeline import ops
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    header,
    produce,
    read_topic,
    running,
    subscription,
)
from tests.receivers import Received, Receiver, failing_first_attempt


def attempts_by_id(requests: list[Received]) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in requests)


async def test_flaky_receiver_gets_every_event_through_the_retry_tiers(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    rng = random.Random(20261128)
    succeeded: set[str] = set()

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        roll = rng.random()
        if roll < 0.05:
            await asyncio.sleep(1.5)  # longer than the subscription's timeout: the dispatcher gives up
            return web.Response(status=204)
        if roll < 0.35:
            return web.Response(status=500)
        succeeded.add(request.headers["webhook-id"])
        return web.Response(status=204)

    n = 300
    async with Receiver(flaky) as receiver:
        sub = subscription("flaky", receiver.url, [topic], timeout=0.5, retry={"schedule": [0.2] * 25})
        await apply(settings, [sub])
        async with running(settings):
            produce(settings, topic, events(n))
            await receiver.wait_for(lambda reqs: len(succeeded) == n, 90)
    counts = attempts_by_id(receiver.requests)
    assert set(counts) == succeeded == {f"e{i}" for i in range(n)}
    assert sum(counts.values()) > n, "some requests must have been retried"

    retried = [
        m
        for tier in range(len(settings.retry.tiers))
        for m in _read_all(settings, settings.topics.retry(tier))
    ]
    assert retried, "retries went through the retry topics"
    assert {header(m, "fanout-subscription") for m in retried} == {"flaky"}
    attempts = Counter(int(header(m, "fanout-attempt") or 0) for m in retried)
    assert attempts[1] > 0 and all(a >= 1 for a in attempts)
    errors = {header(m, "fanout-last-error") for m in retried}
    assert "HTTP 500" in errors
    assert any(e and e.startswith("timeout") for e in errors)


def _read_all(settings, topic):  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": "peek", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
    finally:
        consumer.close()
    return read_topic(settings, topic, total, timeout=30) if total else []


async def test_tier_order_and_long_delays_do_not_hold_back_short_ones(bootstrap: str, unique: str) -> None:
    # Every first attempt fails here, which would open the breaker: keep it out of this test.
    settings = engine_settings(bootstrap, unique, partitions=1, delivery={"breaker_failures": 1000})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    def first_answer(event_id: str) -> web.StreamResponse:
        if event_id == "long":
            return web.Response(status=503, headers={"Retry-After": "4"})
        return web.Response(status=500)

    async with Receiver(failing_first_attempt(first_answer)) as receiver:
        sub = subscription("ordered", receiver.url, [topic], max_in_flight=1, retry={"schedule": [0.3, 0.3]})
        await apply(settings, [sub])
        async with running(settings):
            produce(settings, topic, [orjson.dumps({"event": "x", "id": "long", "data": {}})])
            await receiver.wait_count(1, 30)
            produce(
                settings, topic, [orjson.dumps({"event": "x", "id": f"s{i}", "data": {}}) for i in range(20)]
            )
            await receiver.wait_for(
                lambda reqs: sum(1 for r in reqs if r.headers["webhook-id"] == "long") == 2, 60
            )

    order = [r.headers["webhook-id"] for r in receiver.requests]
    firsts = [i for i in order if i.startswith("s")][:20]
    seconds = [i for k, i in enumerate(order) if i.startswith("s") and i in order[:k]]
    assert firsts == [f"s{i}" for i in range(20)]
    assert seconds == firsts, "retries left the tier in the order they were written"
    long_times = [r.at for r in receiver.requests if r.headers["webhook-id"] == "long"]
    short_retry_times = [
        r.at for k, r in enumerate(receiver.requests) if r.headers["webhook-id"] in order[:k]
    ]
    assert long_times[1] - long_times[0] >= 4.0, "Retry-After was honoured"
    assert max(t for t in short_retry_times if t != long_times[1]) < long_times[1], (
        "the long delay (tier 5s) did not hold back the short ones (tier 0.5s)"
    )


async def test_retry_records_held_in_memory_stay_within_the_budget(
    bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry records not due yet are held in memory up to a budget for the whole consumer, whatever the
    partition count; past it the partitions pause, and what they did not hold is fetched again later."""
    budget = 60
    monkeypatch.setattr(consumer_module, "HELD_BACK_BUDGET", budget)
    partitions = 4
    settings = engine_settings(
        bootstrap, unique, partitions=partitions, delivery={"breaker_failures": 100_000}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 600
    held_samples: list[int] = []
    async with Receiver(failing_first_attempt()) as receiver:
        await apply(settings, [subscription("later", receiver.url, [topic], retry={"schedule": [3]})])
        async with running(settings) as app:
            produce(settings, topic, events(n))

            async def sample() -> None:
                while True:
                    held_samples.append(app.main.consumer.held_back_count())
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            try:
                await receiver.wait_for(lambda reqs: len(reqs) == 2 * n, 90)
            finally:
                sampler.cancel()
    counts = attempts_by_id(receiver.requests)
    assert set(counts) == {f"e{i}" for i in range(n)} and set(counts.values()) == {2}
    assert max(held_samples) >= budget // 2, "records not due were held, not refetched one by one"
    # The budget can be passed by one record per partition: a partition always holds its first.
    assert max(held_samples) <= budget + partitions * len(settings.retry.tiers)


async def test_permanent_failures_gone_and_ops_events(bootstrap: str, unique: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The breaker stays out of this test: with it, the failing subscription's last attempts wait for
    # probes whose cool-down doubles (2 + 4 + 8 + 16 + 32 s), longer than the test waits under load.
    settings = engine_settings(
        bootstrap,
        unique,
        delivery={"failing_after": 3, "breaker_failures": 100},  # not a breaker test: every attempt counts
        retry={"schedule": [0.1, 0.1, 0.1, 0.1]},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    async def answer(status: int):  # type: ignore[no-untyped-def]
        async def respond(request: web.Request, n: int) -> web.StreamResponse:
            return web.Response(status=status)

        return respond

    async with (
        Receiver(await answer(400)) as bad,
        Receiver(await answer(410)) as gone,
        Receiver(await answer(500)) as failing,
        Receiver() as ops_receiver,
    ):
        subs = [
            subscription("bad-request", bad.url, [topic]),
            subscription("gone", gone.url, [topic]),
            subscription("failing", failing.url, [topic]),
            subscription("ops-watch", ops_receiver.url, [settings.topics.ops], events=["fanout.*"]),
        ]
        await apply(settings, subs)
        async with running(settings):
            produce(settings, topic, events(1))
            await ops_receiver.wait_for(
                lambda reqs: (
                    _ops_seen(reqs)
                    >= {
                        (ops.DISABLED, "gone"),
                        (ops.FAILING, "failing"),
                        (ops.DEAD_LETTERED, "failing"),
                        (ops.DEAD_LETTERED, "bad-request"),
                    }
                ),
                60,
            )
        ops_events = [orjson.loads(r.body) for r in ops_receiver.requests]
        by_type: dict[str, list[dict]] = {}  # type: ignore[type-arg]
        for event in ops_events:
            by_type.setdefault(event["type"], []).append(event["data"])
        assert by_type[ops.DISABLED] == [
            {"subscription": "gone", "reason": by_type[ops.DISABLED][0]["reason"]}
        ]
        assert "410" in by_type[ops.DISABLED][0]["reason"]
        assert [d["subscription"] for d in by_type[ops.FAILING]] == ["failing"]
        assert by_type[ops.FAILING][0]["consecutive_failures"] == 3
        dead = {d["subscription"]: d for d in by_type[ops.DEAD_LETTERED]}
        assert dead["failing"]["reason"] == "retries exhausted" and dead["failing"]["attempts"] == 5
        assert dead["bad-request"]["reason"] == "permanent failure: HTTP 400"

        # The ops event goes out before the compare-and-set write of the subscription (off the loop): read
        # the store until that write shows, within a deadline.
        store = SubscriptionStore(settings)
        deadline = time.monotonic() + 30
        while True:
            stored = await asyncio.get_running_loop().run_in_executor(None, store.read)
            if stored["gone"].enabled is False or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        store.close()
        assert stored["gone"].enabled is False and "410" in (stored["gone"].disabled_reason or "")

        letters = read_topic(settings, settings.topics.dlq, 3)
        by_sub = {header(m, "fanout-subscription"): m for m in letters}
        assert header(by_sub["bad-request"], "fanout-reason") == "permanent failure: HTTP 400"
        assert header(by_sub["bad-request"], "fanout-attempt") == "1"
        assert header(by_sub["bad-request"], "fanout-status") == "400"
        assert header(by_sub["failing"], "fanout-reason") == "retries exhausted"
        assert header(by_sub["failing"], "fanout-attempt") == "5"
        assert header(by_sub["failing"], "fanout-last-error") == "HTTP 500"
        assert header(
            by_sub["gone"],
            "fanout-reason",
        ).startswith("endpoint gone")  # type: ignore[union-attr]
        for m in letters:
            assert header(m, "fanout-origin-topic") == topic
            assert header(m, "fanout-event-id") == "e0"

        # The disable survives a restart: later events for "gone" are dead-lettered, not sent.
        requests_before = len(gone.requests)
        async with running(settings):
            produce(settings, topic, events(2, start=1))
            disabled = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 3 + 6, 60)
        assert len(gone.requests) == requests_before
        reasons = Counter((header(m, "fanout-subscription"), header(m, "fanout-reason")) for m in disabled)
        assert reasons[("gone", "subscription disabled")] == 2


def _ops_seen(requests: list[Received]) -> set[tuple[str, str]]:
    bodies = [orjson.loads(r.body) for r in requests]
    return {(b["type"], b["data"]["subscription"]) for b in bodies}


async def test_poison_records_are_dead_lettered_and_the_rest_delivered(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique, partitions=1)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with Receiver() as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic])])
        async with running(settings):
            produce(
                settings, topic, [b"this is not json {", b'{"data": {"no": "type"}}', b"[1, 2]", *events(5)]
            )
            await receiver.wait_count(5, 30)
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 3)
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == [f"e{i}" for i in range(5)]
    reasons = sorted(header(m, "fanout-reason") or "" for m in letters)
    assert reasons[0].startswith("poison record: JSON is a list")
    assert reasons[1].startswith("poison record: no event type")
    assert reasons[2].startswith("poison record: not valid JSON")
    assert sorted(m.value() for m in letters) == sorted(
        [b"this is not json {", b'{"data": {"no": "type"}}', b"[1, 2]"]
    )
    assert {header(m, "fanout-origin-offset") for m in letters} == {"0", "1", "2"}
