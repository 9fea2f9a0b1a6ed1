"""Records a source topic accepts but a hand-off cannot write as they are (issue 13, defect 3).

A record that must go to a retry tier or the dead letters, and that the producer or the hand-off topic
refuses as too large, becomes a dead letter without its value (reason ``record too large``, origin
headers kept, the dropped size in ``fanout-value-dropped``); its offset commits, the partition keeps
flowing, and a stop does not wait out ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from confluent_kafka import Message, Producer

from fanout.config import Settings
from fanout.kafka.topics import HEADER_ROOM_BYTES, TopicSpec, admin_client, create_topics, internal_topics
from tests.integration.engine import (
    apply,
    committed_total,
    create_engine_topics,
    engine_settings,
    events,
    header,
    read_topic,
    running,
    subscription,
    wait_for_topics,
)
from tests.receivers import Receiver

BIG_ID = "big"
DRAIN_TIMEOUT = 60.0
PROMPT_STOP = 20.0  # a stop that waited for the stuck hand-off would take DRAIN_TIMEOUT
DISPATCHER = {"drain_timeout": DRAIN_TIMEOUT, "stall_timeout": DRAIN_TIMEOUT * 2}


def _refusing(status: int) -> Any:
    """Answers ``status`` to the big event and 204 to every other one."""

    async def respond(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status if request.headers["webhook-id"] == BIG_ID else 204)

    return respond


def _big_event(payload: str) -> bytes:
    return orjson.dumps({"event": "user.created", "id": BIG_ID, "data": {"blob": payload}})


def _produce(settings: Settings, topic: str, values: list[bytes], **conf: Any) -> None:
    """Produce to partition 0 with a producer that takes records up to 16 MiB, in order."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "message.max.bytes": 16 << 20, **conf})
    failures: list[str] = []

    def delivered(error: Any, _msg: Message) -> None:
        if error is not None:
            failures.append(error.str())

    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=delivered)
        producer.flush(30)  # one at a time: every record is its own batch, in order
    assert producer.flush(30) == 0 and not failures, failures


async def _hand_off_too_large(settings: Settings, topic: str, big: bytes, **produce_conf: Any) -> None:
    """Deliver small events around ``big``; a 400 and a 500 subscriber refuse ``big`` only."""
    async with (
        Receiver() as healthy,
        Receiver(_refusing(400)) as rejecting,
        Receiver(_refusing(500)) as failing,
    ):
        await apply(
            settings,
            [
                subscription("healthy", healthy.url, [topic]),
                subscription("rejecting", rejecting.url, [topic]),
                subscription("failing", failing.url, [topic]),
            ],
        )
        small = events(4)
        async with running(settings) as app:
            await asyncio.to_thread(_produce, settings, topic, [small[0], big, *small[1:]], **produce_conf)
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 2, 60)
            await _until_committed(settings, topic, 5)
            for receiver in (healthy, rejecting, failing):
                await receiver.wait_for(
                    lambda reqs: {r.headers["webhook-id"] for r in reqs} >= {f"e{i}" for i in range(4)}, 30
                )
            stopping = time.monotonic()
            app.stop()
        stopped = time.monotonic() - stopping
    assert stopped < PROMPT_STOP, f"the stop took {stopped:.1f}s (drain_timeout {DRAIN_TIMEOUT}s)"
    totals = app.counts.totals()
    assert totals["hand_off_refused"] == 2 and totals["hand_off_dropped"] == 0
    # The big event itself was deliverable: a subscriber that takes it gets all of it.
    assert [len(r.body) > len(big) - 1024 for r in healthy.requests if r.headers["webhook-id"] == BIG_ID] == [
        True
    ]

    assert {header(m, "fanout-subscription") for m in letters} == {"rejecting", "failing"}
    for letter in letters:
        assert letter.value() is None
        assert header(letter, "fanout-reason") == "record too large"
        assert header(letter, "fanout-value-dropped") == str(len(big))
        assert header(letter, "fanout-event-id") == BIG_ID
        assert (
            header(letter, "fanout-origin-topic"),
            header(letter, "fanout-origin-partition"),
            header(letter, "fanout-origin-offset"),
        ) == (topic, "0", "1")
        assert header(letter, "fanout-not-before") is None
    by_sub = {header(m, "fanout-subscription"): m for m in letters}
    assert header(by_sub["rejecting"], "fanout-status") == "400"
    assert header(by_sub["failing"], "fanout-status") == "500"
    assert header(by_sub["failing"], "fanout-last-error") == "HTTP 500"


async def _until_committed(settings: Settings, topic: str, offset: int, timeout: float = 60.0) -> None:
    """Poll the group's committed offset (with a deadline) until it reaches ``offset``."""
    deadline = time.monotonic() + timeout
    while (committed := await asyncio.to_thread(committed_total, settings, [topic])) < offset:
        assert time.monotonic() < deadline, f"committed offset stuck at {committed}, expected {offset}"
        await asyncio.sleep(0.5)  # polling the broker with a deadline


async def test_a_source_topic_taking_more_than_the_hand_off_topics(
    bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The source topic takes 8 MiB records; the retry and dead-letter topics the default ~2 MiB. The
    producer is sized for 8 MiB, so the broker refuses the 3 MiB hand-offs (MESSAGE_TOO_LARGE)."""
    settings = engine_settings(bootstrap, unique, partitions=1, dispatcher=DISPATCHER)
    topic = f"{unique}.events"
    admin = admin_client(settings)
    create_topics(admin, internal_topics(settings))
    create_topics(admin, [TopicSpec(topic, "source", 1, 1, {"max.message.bytes": str(8 << 20)})])
    wait_for_topics(settings, [topic, settings.topics.dlq])
    incompressible = base64.b64encode(os.urandom(3 << 20)).decode()[: 3 << 20]
    with caplog.at_level(logging.INFO, logger="fanout.runtime.app"):
        await _hand_off_too_large(settings, topic, _big_event(incompressible))
    started = [r.getMessage() for r in caplog.records if r.name == "fanout.runtime.app"]
    assert f"producer record limit: {(8 << 20) + HEADER_ROOM_BYTES} bytes" in started
    assert any(m.startswith(f"source topic {topic} accepts records up to {8 << 20} bytes") for m in started)


async def test_a_record_larger_than_its_topic_allows_arriving_compressed(bootstrap: str, unique: str) -> None:
    """Default limits everywhere (~2 MiB): a highly compressible 5 MiB record gets in as a zstd batch,
    and the producer's own size check refuses its hand-off (MSG_SIZE_TOO_LARGE)."""
    settings = engine_settings(bootstrap, unique, partitions=1, dispatcher=DISPATCHER)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    big = _big_event("a" * (5 << 20))
    assert len(big) > settings.kafka.message_max_bytes * 2
    await _hand_off_too_large(settings, topic, big, **{"compression.type": "zstd"})
