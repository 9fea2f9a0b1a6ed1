"""Consumer groups side by side on one topic prefix: each consumes only the retries it wrote, and a new
group starts the retry tiers at their end (issue 13, defect 8)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
from confluent_kafka import Producer

from fanout.config import Settings
from fanout.model import headers as H
from tests.integration.engine import apply, create_engine_topics, engine_settings, running, subscription
from tests.receivers import Receiver

TIERS = 5  # engine_settings' retry tiers


def in_group(settings: Settings, group: str) -> Settings:
    """The same prefix, subscriptions and secrets key, another consumer group."""
    return settings.model_copy(
        update={"dispatcher": settings.dispatcher.model_copy(update={"group_id": group})}
    )


def write_retries(settings: Settings, records: list[tuple[str, int, str, str | None]]) -> None:
    """Retry records due now, as a dispatcher of ``group`` (None: written before records named their
    group) would write them: (topic, partition, event id, group), addressed to subscription "s"."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all"})
    now_ms = int(time.time() * 1000)
    for topic, partition, event_id, group in records:
        headers = H.encode(
            {
                H.SUBSCRIPTION: "s",
                H.GROUP: group,
                H.ATTEMPT: 1,
                H.NOT_BEFORE: now_ms,
                H.FIRST_ATTEMPT: now_ms,
                H.ORIGIN_TOPIC: f"{settings.topics.prefix}.origin",
                H.ORIGIN_PARTITION: 0,
                H.ORIGIN_OFFSET: 0,
                H.EVENT_ID: event_id,
            }
        )
        value = orjson.dumps({"event": "user.created", "id": event_id, "data": {}})
        producer.produce(topic, value=value, partition=partition, headers=headers)
    assert producer.flush(30) == 0


def delivered(receiver: Receiver, since: int = 0) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in receiver.requests[since:])


async def test_groups_on_one_prefix_deliver_only_their_own_retries_and_a_new_group_none_of_the_old(
    bootstrap: str, unique: str
) -> None:
    blue = engine_settings(bootstrap, unique)
    green = in_group(blue, f"{unique}.green")
    topic = f"{unique}.events"
    create_engine_topics(blue, [topic])
    partitions = blue.topics.partitions
    tier0 = blue.topics.retry(0)
    async with Receiver() as receiver:
        await apply(blue, [subscription("s", receiver.url, [topic])])
        async with running(blue) as blue_app, running(green) as green_app:
            for app in (blue_app, green_app):
                assert app.main is not None
                await asyncio.to_thread(app.main.consumer.joined.wait, 60)
            records = [
                (tier0, i % partitions, f"{name}{i}", group)
                for name, group in (("blue", blue.dispatcher.group_id), ("green", green.dispatcher.group_id))
                for i in range(6)
            ] + [(tier0, i % partitions, f"old{i}", None) for i in range(6)]
            # A marker per partition and group, after everything else: once each group delivered its
            # markers and both delivered the records naming no group, both have read every record.
            markers = [
                (tier0, p, f"marker-{name}-{p}", settings.dispatcher.group_id)
                for p in range(partitions)
                for name, settings in (("blue", blue), ("green", green))
            ]
            await asyncio.to_thread(write_retries, blue, records + markers)

            def read_through(reqs: object) -> bool:
                got = delivered(receiver)
                return {m[2] for m in markers} <= set(got) and all(got[f"old{i}"] >= 2 for i in range(6))

            await receiver.wait_for(read_through, 60)
        got = delivered(receiver)
        for name in ("blue", "green"):
            assert all(got[f"{name}{i}"] == 1 for i in range(6)), f"{name}'s retries once, by {name}: {got}"
        assert all(got[f"old{i}"] == 2 for i in range(6)), "records naming no group: every group"
        skipped = 6 + partitions  # the other group's retries and markers
        assert blue_app.counts.totals()["skipped_other_group"] == skipped
        assert green_app.counts.totals()["skipped_other_group"] == skipped

        newcomer = in_group(blue, f"{unique}.new")
        before = len(receiver.requests)
        async with running(newcomer) as app:
            assert app.main is not None
            await asyncio.to_thread(app.main.consumer.joined.wait, 60)
            every_partition = [
                (blue.topics.retry(t), p, f"marker-new-{t}-{p}", newcomer.dispatcher.group_id)
                for t in range(TIERS)
                for p in range(partitions)
            ]
            await asyncio.to_thread(write_retries, blue, every_partition)
            wanted = {m[2] for m in every_partition}
            await receiver.wait_for(lambda reqs: wanted <= set(delivered(receiver, before)), 60)
        assert set(delivered(receiver, before)) == wanted, "a new group re-delivered older retries"
