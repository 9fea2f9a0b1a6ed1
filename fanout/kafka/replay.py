"""Replay a time range of the source topics to one subscription (DESIGN.md, "Replays").

For each of the subscription's topics, the offsets of ``since`` and ``until`` are found by timestamp
(``offsets_for_times``); every record in between with ``since <= timestamp < until`` is decoded and
routed with a table holding only this subscription, and each match is written to the first retry
tier addressed to it and to this process's ``dispatcher.group_id`` (``headers.for_replay``): attempts
from 0, ``max_age`` from now, the event id it would have had (so the webhook-id is the one the
subscriber saw, if it saw it). Undecodable records are skipped: they were dead-lettered when first
read. Blocking; reports progress as it goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from fanout.config import Settings
from fanout.kafka.producer import produce_waiting, producer_config
from fanout.kafka.ranges import RangeReader
from fanout.model import headers as H
from fanout.model.errors import FanoutError, PoisonRecord
from fanout.model.event import Headers
from fanout.model.subscription import Subscription
from fanout.pipeline.decode import decode
from fanout.pipeline.route import RoutingTable

PROGRESS_EVERY = 0.5


@dataclass
class ReplayProgress:
    total: int = 0
    scanned: int = 0
    matched: int = 0
    written: int = 0


def replay_source(
    settings: Settings,
    sub: Subscription,
    since_ms: int,
    until_ms: int,
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplayProgress:
    table = RoutingTable.build([sub])
    retry_topic = settings.topics.retry(0)
    group = settings.dispatcher.group_id
    state = ReplayProgress()
    failures: list[str] = []

    def acked(error: KafkaError | None, _msg: Message) -> None:
        if error is None:
            state.written += 1
        else:
            failures.append(error.str())

    producer = Producer(producer_config(settings))
    last = time.monotonic()
    with RangeReader(settings) as reader:
        ranges = []
        for topic in sub.topics:
            parts = reader.partitions(topic)
            starts = reader.offsets_at(topic, parts, since_ms, beginning=True)
            ends = reader.offsets_at(topic, parts, until_ms, beginning=False)
            state.total += sum(max(0, ends[p] - starts[p]) for p in parts)
            ranges.append((topic, starts, ends))
        for topic, starts, ends in ranges:
            for msg in reader.read(topic, starts, ends):
                state.scanned += 1
                if since_ms <= msg.timestamp()[1] < until_ms:
                    _replay_one(msg, topic, table, sub.id, group, producer, retry_topic, acked, state)
                producer.poll(0)
                if progress is not None and time.monotonic() - last >= PROGRESS_EVERY:
                    progress(state)
                    last = time.monotonic()
                if stop is not None and stop.is_set():
                    raise FanoutError("replay stopped")
    if producer.flush(60) or failures:
        raise FanoutError(f"replay: the broker did not acknowledge every record: {failures[:1]}")
    if progress is not None:
        progress(state)
    return state


def _replay_one(
    msg: Message,
    topic: str,
    table: RoutingTable,
    sub_id: str,
    group: str,
    producer: Producer,
    retry_topic: str,
    acked: Callable[[KafkaError | None, Message], None],
    state: ReplayProgress,
) -> None:
    headers = cast(Headers, msg.headers() or [])
    partition, offset = msg.partition() or 0, msg.offset() or 0
    try:
        event = decode(topic, partition, offset, msg.key(), msg.value(), headers, msg.timestamp()[1] / 1000)
    except PoisonRecord:
        return
    if not table.route(event):
        return
    state.matched += 1
    origin = (topic, partition, offset, int(event.time * 1000))
    replayed = H.for_replay(headers, sub_id, group, event.id, origin, int(time.time() * 1000))
    produce_waiting(
        producer,
        retry_topic,
        value=msg.value(),
        key=msg.key(),
        headers=cast(Any, replayed),
        on_delivery=acked,
    )
