"""How a fanout group member's consumer is configured, and which of the errors it returns are fatal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from fanout.config import Settings
from fanout.kafka.consumer_stats import STATS_INTERVAL_MS
from fanout.model.errors import FatalKafkaError

log = logging.getLogger("fanout.kafka.consumer")


def consumer_config(
    settings: Settings,
    group_id: str,
    on_commit: Callable[..., None],
    instance_id: str | None = None,
    on_stats: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    d = settings.dispatcher
    static: dict[str, Any] = {"group.instance.id": instance_id} if instance_id else {}
    if on_stats is not None:
        static.update({"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": on_stats})
    return {
        **static,
        **settings.kafka.librdkafka(),
        "group.id": group_id,
        **group_protocol_config(settings),
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": d.commit_interval_ms,
        "auto.offset.reset": d.auto_offset_reset,
        "max.poll.interval.ms": d.max_poll_interval_ms,
        "isolation.level": "read_committed",
        "fetch.max.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,  # bounded prefetch: memory stays flat under backlog
        "queued.min.messages": 20_000,
        # When the prefetch queue is full, librdkafka waits this long before fetching again once it has
        # drained (default 1 s): long enough to starve the lanes for most of a second at high rates.
        "fetch.queue.backoff.ms": 10,
        "on_commit": on_commit,
    }


def consumer_error(error: KafkaError) -> None:
    """An error ``consume()`` returned: raise FatalKafkaError if the consumer cannot go on. librdkafka
    reports a fatal error there as ``_FATAL`` without the fatal flag (the flag is set only on the
    error callback's copy), e.g. a static member fenced by another with its ``group.instance.id``."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise FatalKafkaError(f"consumer: {error.str()}")
    if error.code() == KafkaError._PARTITION_EOF:
        return
    log.warning("consumer: %s", error.str())


def group_protocol_config(settings: Settings) -> dict[str, Any]:
    """How a member of a fanout consumer group joins it. With the KIP-848 ``consumer`` protocol the
    broker assigns partitions (incrementally, like cooperative-sticky) and owns the session timeout and
    heartbeat interval (``group.consumer.session.timeout.ms``...); librdkafka rejects the classic
    settings there."""
    d = settings.dispatcher
    if d.group_protocol == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": d.session_timeout_ms,
        "heartbeat.interval.ms": min(d.heartbeat_interval_ms, d.session_timeout_ms // 3),
    }
