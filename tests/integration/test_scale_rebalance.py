"""Rebalances that meet a member's own flow control: partitions paused by backpressure move away and back."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from confluent_kafka import Consumer, Producer

from fanout.config import Settings
from fanout.kafka.consumer import group_protocol_config
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    running,
    subscription,
)
from tests.receivers import Receiver

pytestmark = pytest.mark.slow


def produce_to_partitions(settings: Settings, topic: str, partitions: int, per_partition: int) -> set[str]:
    """``per_partition`` events on each partition (explicitly), ids ``p<partition>-<i>``."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all"})
    ids = set()
    for i in range(per_partition):
        for p in range(partitions):
            event_id = f"p{p}-{i}"
            ids.add(event_id)
            value = f'{{"event": "user.created", "id": "{event_id}", "data": {{}}}}'.encode()
            producer.produce(topic, value=value, partition=p)
    assert producer.flush(30) == 0
    return ids


def plain_member_joins_and_leaves(settings: Settings, topic: str, timeout: float = 90) -> list[int]:
    """A plain consumer joins the dispatcher's group (same protocol), stays until it owns partitions of
    ``topic``, then leaves; it commits nothing. Returns the partitions it owned."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": settings.dispatcher.group_id,
            **group_protocol_config(settings),
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the plain consumer was never given a partition"
            consumer.poll(0.1)
        return [tp.partition for tp in consumer.assignment()]
    finally:
        consumer.close()


async def test_partitions_paused_by_backpressure_resume_when_they_come_back(
    bootstrap: str, unique: str
) -> None:
    """Issue 13, defect 1: librdkafka keeps the application's pause flag across an incremental
    unassign/assign, so a partition revoked while paused came back paused and was never fetched again."""
    partitions, bound, per_partition = 2, 3, 10
    settings = engine_settings(
        bootstrap,
        unique,
        partitions=partitions,
        dispatcher={"max_uncommitted": bound, "drain_timeout": 2, "session_timeout_ms": 6000},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    released = asyncio.Event()

    async def held(request: web.Request, n: int) -> web.StreamResponse:
        await released.wait()  # nothing settles: every partition fills up to max_uncommitted and pauses
        return web.Response(status=204)

    async with Receiver(held) as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic], timeout=120)])
        async with running(settings) as app:
            assert app.main is not None
            consumer = app.main.consumer
            ids = await asyncio.to_thread(produce_to_partitions, settings, topic, partitions, per_partition)
            await receiver.wait_count(bound * partitions, 60)
            source = {(topic, p) for p in range(partitions)}
            deadline = time.monotonic() + 30
            while not source <= consumer.paused_partitions():
                assert time.monotonic() < deadline, f"not paused: {source - consumer.paused_partitions()}"
                await asyncio.sleep(0.05)  # polling the consumer thread's state with a deadline
            moved = await asyncio.to_thread(plain_member_joins_and_leaves, settings, topic)
            assert moved, "some source partition moved to the plain consumer and back"
            released.set()
            await receiver.wait_for(lambda reqs: {r.headers["webhook-id"] for r in reqs} >= ids, 90)
    assert {r.headers["webhook-id"] for r in receiver.requests} == ids
