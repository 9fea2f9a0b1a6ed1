"""Key-ordered subscriptions: per-key offset order under transient failures; a failing key blocks only
itself; an unordered subscription on the same topic is not delayed."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
from aiohttp import web

from fanout.control.subscriptions import SubscriptionStore
from tests.integration.engine import (
    apply,
    committed_total,
    create_engine_topics,
    engine_settings,
    produce_records,
    running,
    subscription,
    wait_for_members,
)
from tests.receivers import Received, Receiver


def collapse(ids: list[str]) -> list[str]:
    """Arrival order with the retries of one delivery folded into one entry."""
    out: list[str] = []
    for i in ids:
        if not out or out[-1] != i:
            out.append(i)
    return out


def by_key(requests: list[Received]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for r in requests:
        body = orjson.loads(r.body)
        keys.setdefault(body["data"]["key"], []).append(r.headers["webhook-id"])
    return keys


async def test_per_key_order_with_transient_failures(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    rng = random.Random(4242)
    succeeded: set[str] = set()

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        if rng.random() < 0.2:
            return web.Response(status=503)
        succeeded.add(request.headers["webhook-id"])
        return web.Response(status=204)

    n, keys = 500, [f"k{i}" for i in range(10)]
    records = []
    for i in range(n):
        key = keys[i % len(keys)]
        records.append(
            (key.encode(), orjson.dumps({"event": "x", "id": f"e{i:03d}", "data": {"key": key}}), None)
        )
    async with Receiver(flaky) as receiver:
        sub = subscription(
            "ordered",
            receiver.url,
            [topic],
            ordering="key",
            max_in_flight=10,
            retry={"schedule": [0.05] * 30},
        )
        await apply(settings, [sub])
        async with running(settings):
            produce_records(settings, topic, records)
            await receiver.wait_for(lambda reqs: len(succeeded) == n, 90)
    assert len(receiver.requests) > n, "some deliveries failed and were retried in place"
    expected = {key: [f"e{i:03d}" for i in range(n) if keys[i % len(keys)] == key] for key in keys}
    for key, ids in by_key(receiver.requests).items():
        assert collapse(ids) == expected[key], f"key {key} out of order"


async def test_a_failing_key_blocks_only_itself_and_not_the_unordered_subscription(
    bootstrap: str, unique: str
) -> None:
    # The failing key never succeeds: a short drain deadline keeps the test's shutdown short.
    settings = engine_settings(bootstrap, unique, partitions=1, dispatcher={"drain_timeout": 2})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    async def poison_key(request: web.Request, n: int) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        return web.Response(status=500 if body["data"]["key"] == "bad" else 204)

    n = 60
    records = []
    for i in range(n):
        key = "bad" if i % 3 == 0 else f"good{i % 3}"
        records.append(
            (key.encode(), orjson.dumps({"event": "x", "id": f"e{i:03d}", "data": {"key": key}}), None)
        )
    async with Receiver(poison_key) as ordered_rx, Receiver() as plain_rx:
        await apply(
            settings,
            [
                subscription(
                    "ordered", ordered_rx.url, [topic], ordering="key", retry={"schedule": [0.5] * 40}
                ),
                subscription("plain", plain_rx.url, [topic]),
            ],
        )
        async with running(settings):
            start = time.time()
            produce_records(settings, topic, records)
            await plain_rx.wait_count(n, 30)
            plain_done = time.time() - start
            good = {f"e{i:03d}" for i in range(n) if i % 3}
            await ordered_rx.wait_for(lambda reqs: good <= {r.headers["webhook-id"] for r in reqs}, 30)
            good_done = time.time() - start

            def bad(reqs: list[Received]) -> list[Received]:
                return [r for r in reqs if orjson.loads(r.body)["data"]["key"] == "bad"]

            await ordered_rx.wait_for(
                lambda reqs: len(bad(reqs)) >= 3, 30
            )  # retried in place, again and again
            bad_attempts = bad(ordered_rx.requests)
    assert plain_done < 5, f"the unordered subscription waited for the failing key: {plain_done:.1f}s"
    assert good_done < 10, f"the other keys waited for the failing key: {good_done:.1f}s"
    assert {r.headers["webhook-id"] for r in bad_attempts} == {"e000"}, (
        "the failing key never moved past its head"
    )


async def test_an_ordered_subscription_added_later_starts_where_the_shared_group_is(
    bootstrap: str, unique: str
) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    def records(ids: range) -> list[tuple[bytes, bytes, None]]:
        return [(b"k", orjson.dumps({"event": "x", "id": f"e{i}", "data": {"key": "k"}}), None) for i in ids]

    async with Receiver() as plain_rx, Receiver() as ordered_rx:
        await apply(settings, [subscription("plain", plain_rx.url, [topic])])
        async with running(settings):
            produce_records(settings, topic, records(range(20)))
            await plain_rx.wait_count(20, 30)
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(committed_total, settings, [topic]) < 20:
                assert time.monotonic() < deadline, "the shared group never committed"
                await asyncio.sleep(0.1)  # polling the broker with a deadline
            store = SubscriptionStore(settings)
            await asyncio.to_thread(
                store.put, subscription("ordered", ordered_rx.url, [topic], ordering="key")
            )
            store.close()
            await wait_for_members(settings, 1, group_id=f"{settings.dispatcher.group_id}.ordered.ordered")
            produce_records(settings, topic, records(range(20, 25)))
            await ordered_rx.wait_count(5, 30)
            await plain_rx.wait_count(25, 30)
    assert [r.headers["webhook-id"] for r in ordered_rx.requests] == [f"e{i}" for i in range(20, 25)]
