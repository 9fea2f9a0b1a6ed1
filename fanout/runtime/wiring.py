"""What the pipeline takes, built from ``Settings``: the pipeline never reads the settings itself."""

from __future__ import annotations

from collections.abc import Callable

from fanout.config import Settings
from fanout.history.writer import AckSink, SinkAttemptLog
from fanout.model.event import Delivery
from fanout.model.ports import RecordSink
from fanout.pipeline.counts import SettleCounts
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.records import RecordTopics, RecordWriter
from fanout.pipeline.retry_policy import RetryPolicy
from fanout.pipeline.settle import Settler


def retry_policy(settings: Settings) -> RetryPolicy:
    retry = settings.retry
    return RetryPolicy(
        tiers=tuple(retry.tiers),
        schedule=tuple(retry.schedule),
        jitter=retry.jitter,
        max_age=retry.max_age,
        max_pending=retry.max_pending,
        retry_after_max=settings.delivery.retry_after_max,
    )


def record_topics(settings: Settings) -> RecordTopics:
    topics = settings.topics
    return RecordTopics(
        retry=tuple(topics.retry(i) for i in range(len(settings.retry.tiers))), dlq=topics.dlq
    )


def settler(
    settings: Settings,
    sink: RecordSink,
    ops: OpsEvents,
    on_gone: Callable[[Delivery], None],
    counts: SettleCounts | None = None,
) -> Settler:
    """The settler of the shared group ``dispatcher.group_id`` (key-ordered members settle through it
    too), writing through ``sink`` and counting in ``counts``."""
    writer = RecordWriter(sink, record_topics(settings), settings.dispatcher.group_id, counts)
    return Settler(retry_policy(settings), writer, ops, settings.delivery.failing_after, on_gone)


def attempt_log(settings: Settings, sink: AckSink, member: str) -> SinkAttemptLog | None:
    """The delivery history's writer (``history.record``), None when it is ``off``."""
    history = settings.history
    if history.record == "off":
        return None
    return SinkAttemptLog(
        sink,
        settings.topics.attempts,
        history.record,
        member,
        response_bytes=history.response_bytes,
        payload_bytes=history.payload_bytes,
    )


def response_prefix(settings: Settings) -> int | None:
    """Bytes of each response body the sender keeps for the history; None when it records nothing."""
    return None if settings.history.record == "off" else settings.history.response_bytes
