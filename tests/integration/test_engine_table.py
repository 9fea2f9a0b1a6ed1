"""The subscriptions topic as the live source of truth, and compare-and-set writes."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from fanout.control.subscriptions import SubscriptionStore
from fanout.model.errors import VersionConflict
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    produce,
    running,
    subscription,
)
from tests.receivers import Receiver


async def test_subscriptions_added_and_deleted_through_the_topic_apply_live(
    bootstrap: str, unique: str
) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    store = SubscriptionStore(settings)
    seq = iter(range(1_000_000))

    def publish(n: int = 1) -> list[str]:
        ids = [f"m{next(seq)}" for _ in range(n)]
        produce(settings, topic, [orjson.dumps({"event": "x", "id": i, "data": {}}) for i in ids])
        return ids

    async def publish_until(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the table change was not applied in time"
            publish()
            await asyncio.sleep(0.2)  # pacing the probe events, not synchronisation: the loop re-checks

    async with Receiver() as a, Receiver() as b:
        await apply(settings, [subscription("a", a.url, [topic])])
        async with running(settings):
            first = publish(5)
            await a.wait_count(5, 30)
            await asyncio.to_thread(store.put, subscription("b", b.url, [topic]))
            await publish_until(lambda: len(b.requests) > 0)
            assert not {r.headers["webhook-id"] for r in b.requests} & set(first), (
                "b only gets events after it"
            )

            await asyncio.to_thread(store.delete, "a")
            a_seen = len(a.requests)
            await publish_until(lambda: any(r.headers["webhook-id"] not in _ids(a) for r in b.requests[-1:]))
            after = publish(20)
            await b.wait_for(lambda reqs: set(after) <= {r.headers["webhook-id"] for r in reqs}, 30)
            assert not set(after) & _ids(a), "a deleted subscription receives nothing new"
            assert len(a.requests) >= a_seen
    store.close()


def _ids(receiver: Receiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests}


def test_concurrent_writes_with_the_same_version_let_exactly_one_win(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    create_engine_topics(settings, [])
    base = subscription("cas", "https://hooks.example.com/x", ["orders"])
    first = SubscriptionStore(settings)
    created = first.put(base, create=True)
    assert created.version == 1
    with pytest.raises(VersionConflict):
        first.put(base, create=True)

    writers = [SubscriptionStore(settings) for _ in range(4)]
    barrier = threading.Barrier(len(writers))
    results: list[object] = [None] * len(writers)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = writers[i].put(
                base.model_copy(update={"description": f"writer {i}"}), expected_version=1
            )
        except VersionConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [r for r in results if not isinstance(r, VersionConflict)]
    assert len(winners) == 1, results
    assert sum(isinstance(r, VersionConflict) for r in results) == len(writers) - 1

    current = first.read()["cas"]
    assert current.version == 2
    assert current.description == winners[0].description  # type: ignore[attr-defined]
    with pytest.raises(VersionConflict):
        first.put(base.model_copy(update={"description": "stale"}), expected_version=1)
    with pytest.raises(VersionConflict):
        first.delete("cas", expected_version=1)
    assert first.delete("cas", expected_version=2)
    assert "cas" not in first.read()
    for store in [first, *writers]:
        store.close()
