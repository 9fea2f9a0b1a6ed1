"""The records settle writes: retry-tier records, dead letters and poison dead letters.

Each keeps the source record's key, value and headers, and adds fanout's headers as
``fanout.model.headers`` defines them (the wire contract): the subscription, the consumer group that
wrote it, the attempt count, the origin, the first-attempt and received times, the event id, the last
error and status; a retry record its not-before time (and, for a spill, the spill's reason); a dead
letter its reason. A poison record's dead letter carries its reason, group and origin only.

Every record goes through ``HandOff`` (``fanout.pipeline.handoff``): its ticket is released once the
broker acknowledged it, a failed produce is tried again, a refused one becomes a smaller dead letter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fanout.model import headers as H
from fanout.model.event import Delivery, Headers, Settlement
from fanout.model.ports import PipelineTracer, RecordSink, SourceRecord
from fanout.pipeline.counts import SettleCounts
from fanout.pipeline.handoff import Backoff, HandOff


@dataclass(frozen=True, slots=True)
class RecordTopics:
    """Where settle writes: ``retry``, one topic per retry tier in tier order; ``dlq``, dead letters."""

    retry: tuple[str, ...]
    dlq: str


class RecordWriter:
    """Builds and writes settle's records for the consumer group ``group``; hand-offs count in
    ``counts``."""

    def __init__(
        self, sink: RecordSink, topics: RecordTopics, group: str, counts: SettleCounts | None = None
    ) -> None:
        if not topics.retry:
            raise ValueError("at least one retry tier topic is needed")
        self.topics = topics
        self.group = group
        self.counts = counts if counts is not None else SettleCounts()
        self._hand_off = HandOff(sink, topics.dlq, self.counts)

    @property
    def tracer(self) -> PipelineTracer | None:
        return self._hand_off.tracer

    @tracer.setter
    def tracer(self, tracer: PipelineTracer | None) -> None:
        self._hand_off.tracer = tracer

    @property
    def backoff(self) -> Backoff:
        """The backoff between tries of a failed produce."""
        return self._hand_off.backoff

    @backoff.setter
    def backoff(self, backoff: Backoff) -> None:
        self._hand_off.backoff = backoff

    def retry(self, delivery: Delivery, tier: int, delay: float, reason: str, status: int | None) -> int:
        """Write ``delivery`` to retry tier ``tier``, due in ``delay`` seconds; return that not-before
        time (epoch ms). ``reason``: a spill's ("" after an attempt); ``status``: the attempt's HTTP
        status, if any."""
        not_before = int(time.time() * 1000) + int(delay * 1000)
        headers = self._headers(delivery, {H.NOT_BEFORE: not_before, H.REASON: reason, H.STATUS: status})
        event = delivery.event
        self._hand_off.write(
            self.topics.retry[tier], event.key, event.value, headers, delivery.ticket, delivery.trace
        )
        return not_before

    def dead_letter(self, delivery: Delivery, reason: str, status: int | None) -> None:
        """Write ``delivery`` to the dead-letter topic with ``reason`` (and the last HTTP status)."""
        headers = self._headers(delivery, {H.REASON: reason, H.STATUS: status})
        event = delivery.event
        self._hand_off.write(
            self.topics.dlq, event.key, event.value, headers, delivery.ticket, delivery.trace
        )

    def poison(self, record: SourceRecord, reason: str, ticket: Settlement, trace: object = None) -> None:
        """Write a record that could not be decoded to the dead-letter topic, as it came, with
        ``reason``; release ``ticket`` when the broker acknowledged it."""
        extra = H.encode(
            {
                H.REASON: f"poison record: {reason}",
                H.GROUP: self.group,
                H.ORIGIN_TOPIC: record.topic(),
                H.ORIGIN_PARTITION: record.partition(),
                H.ORIGIN_OFFSET: record.offset(),
                H.ORIGIN_TIMESTAMP: record.timestamp()[1],
            }
        )
        headers = H.original(record.headers()) + extra
        self._hand_off.write(self.topics.dlq, record.key(), record.value(), headers, ticket, trace)

    def _headers(self, delivery: Delivery, extra: dict[str, str | int | None]) -> Headers:
        event = delivery.event
        values: dict[str, str | int | None] = {
            H.SUBSCRIPTION: delivery.subscription.id,
            H.GROUP: self.group,
            H.ATTEMPT: delivery.attempt,
            H.ORIGIN_TOPIC: event.topic,
            H.ORIGIN_PARTITION: event.partition,
            H.ORIGIN_OFFSET: event.offset,
            H.ORIGIN_TIMESTAMP: event.source_timestamp_ms
            if event.source_timestamp_ms is not None
            else int(event.time * 1000),
            H.FIRST_ATTEMPT: int(delivery.first_attempt * 1000) or None,
            H.RECEIVED: int(delivery.received * 1000) or None,
            H.EVENT_ID: event.id,
            H.LAST_ERROR: delivery.last_error,
            **extra,
        }
        return H.original(event.headers) + H.encode(values)
