"""settle: every delivery ends as success, a retry-tier record, or a dead letter.

A retry or dead-letter hand-off counts as settled only when the broker acknowledged the produce; until
then the source offset stays uncommitted. A failed produce is tried again (capped exponential
backoff), and a record the broker refuses for good becomes a dead letter without its value
(``fanout.pipeline.handoff``).

Retry delays follow the subscription's schedule with jitter; the record goes to the smallest tier
whose delay is at least the delay due, carrying its exact not-before time and the consumer group that
wrote it (only that group consumes it; see README, "How delivery works"). A spill (lane full, circuit
open) is not an attempt: it comes back when its lane said (``Spilled.retry_after``, at most the longest
tier). ``max_age`` counts from the first attempt, so a delivery is dead-lettered for its endpoint's
failures, never for time spent on fanout's own pace; one never attempted is bounded by
``retry.max_pending`` from when fanout routed it.
"""

from __future__ import annotations

import bisect
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from fanout.config import Settings
from fanout.model import headers as H
from fanout.model.errors import DeliveryError, EndpointGone, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery, Headers, Settlement
from fanout.model.ports import RecordSink
from fanout.pipeline import handoff
from fanout.pipeline.lanes import Spilled
from fanout.pipeline.observe import PipelineTracer
from fanout.pipeline.ops import OpsEvents
from fanout.telemetry.logs import delivery_fields

log = logging.getLogger("fanout.settle")

DISABLED_REASON = "subscription disabled"
REASON_KINDS = (
    ("retries exhausted", "retries_exhausted"),
    ("max age exceeded", "max_age_exceeded"),
    ("endpoint gone", "endpoint_gone"),
    ("permanent failure", "permanent_failure"),
    (DISABLED_REASON, "subscription_disabled"),
    ("transform failed", "transform_failed"),
    ("circuit open", "circuit_open"),
    ("rate limited", "rate_limited"),
    ("lane full", "lane_full"),
    ("endpoint slow", "endpoint_slow"),
    ("lane closed", "lane_closed"),
    (handoff.TOO_LARGE_REASON, "record_too_large"),
    (handoff.REFUSED_REASON, "record_refused"),
    ("pool timeout", "pool_timeout"),
)


def reason_kind(reason: str) -> str:
    """A dead-letter reason as a short, bounded label value (``retries_exhausted``, ``poison``, ...)."""
    for prefix, kind in REASON_KINDS:
        if reason.startswith(prefix):
            return kind
    return "other"


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the pipeline reads (``confluent_kafka.Message`` fits)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


class Settler:
    """Turns outcomes into acknowledged records; counts what happened in ``stats`` (totals),
    ``outcomes`` (by subscription id and outcome: delivered, retried, spilled, dead_lettered) and
    ``dead_letters`` (by subscription id, "" for poison records, and ``reason_kind``)."""

    def __init__(
        self,
        settings: Settings,
        sink: RecordSink,
        ops: OpsEvents,
        on_gone: Callable[[Delivery], None],
        on_failing: Callable[[Delivery, int], None] | None = None,
    ) -> None:
        self._topics = settings.topics
        self._group = settings.dispatcher.group_id
        self._retry = settings.retry
        self._delivery = settings.delivery
        self.ops = ops
        self._on_gone = on_gone
        self._on_failing = on_failing
        self.stats: Counter[str] = Counter()
        self.dead_letter_reasons: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.dead_letters: Counter[tuple[str, str]] = Counter()
        self._writer = handoff.HandOff(
            sink, self._topics.dlq, self.stats, self.dead_letters, self.dead_letter_reasons
        )
        self._consecutive: dict[str, int] = {}

    @property
    def tracer(self) -> PipelineTracer | None:
        return self._writer.tracer

    @tracer.setter
    def tracer(self, tracer: PipelineTracer | None) -> None:
        self._writer.tracer = tracer

    @property
    def hand_off_backoff(self) -> handoff.Backoff:
        return self._writer.backoff

    @hand_off_backoff.setter
    def hand_off_backoff(self, backoff: handoff.Backoff) -> None:
        self._writer.backoff = backoff

    # -- outcomes reported by the lanes ------------------------------------------------------------

    def done(self, delivery: Delivery, error: DeliveryError | None, duration: float) -> None:
        """The outcome of an attempt (or a spill) from a lane: settle it."""
        if delivery.ticket.fenced:
            self.stats["fenced"] += 1
            return
        if error is None:
            self.delivered(delivery)
            return
        if isinstance(error, Spilled):
            self.spill(delivery, error.error, error.retry_after)
            return
        if self.give_up(delivery, error):
            return
        assert isinstance(error, RetryableDelivery)
        delay, reason = self.next_delay(delivery, error)
        if delay is None:
            self.dead_letter(delivery, reason, error.status)
            return
        self.stats["retried"] += 1
        self.outcomes[(delivery.subscription.id, "retried")] += 1
        if log.isEnabledFor(logging.INFO):
            log.info(
                "attempt failed; retrying in %.1fs",
                delay,
                extra=delivery_fields(delivery, attempt=delivery.attempt, error=error.error),
            )
        self._to_retry_tier(delivery, delay, reason="", status=error.status)

    def delivered(self, delivery: Delivery) -> None:
        self.stats["delivered"] += 1
        self.outcomes[(delivery.subscription.id, "delivered")] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("delivered", extra=delivery_fields(delivery, attempt=delivery.attempt + 1))
        self._consecutive.pop(delivery.subscription.id, None)
        delivery.ticket.release()

    def give_up(self, delivery: Delivery, error: DeliveryError) -> bool:
        """Count the failed attempt. Dead-letter it if it is permanent (410 also disables the subscription)
        and return True; return False if it is worth another attempt."""
        delivery.attempt += 1
        delivery.last_error = error.error
        if not delivery.first_attempt:
            delivery.first_attempt = time.time()
        self._count_failure(delivery)
        if isinstance(error, EndpointGone):
            self._on_gone(delivery)
            self.dead_letter(delivery, f"endpoint gone ({error.error}): subscription disabled", error.status)
            return True
        if isinstance(error, PermanentDelivery):
            self.dead_letter(delivery, f"permanent failure: {error.error}", error.status)
            return True
        return False

    def _count_failure(self, delivery: Delivery) -> None:
        sub_id = delivery.subscription.id
        n = self._consecutive.get(sub_id, 0) + 1
        self._consecutive[sub_id] = n
        if n == self._delivery.failing_after:
            log.warning(
                "subscription failing: %d consecutive failed attempts",
                n,
                extra=delivery_fields(delivery, error=delivery.last_error),
            )
            self.ops.failing(delivery, n)
            if self._on_failing is not None:
                self._on_failing(delivery, n)

    def next_delay(self, delivery: Delivery, error: RetryableDelivery) -> tuple[float | None, str]:
        """Seconds until the next attempt (schedule step with jitter, at least a clamped Retry-After), or
        None and the reason when the schedule or ``max_age`` has run out."""
        policy = delivery.subscription.retry
        schedule = policy.schedule or self._retry.schedule
        max_age = policy.max_age or self._retry.max_age
        if delivery.attempt > len(schedule):
            return None, "retries exhausted"
        jitter = self._retry.jitter
        delay = schedule[delivery.attempt - 1] * (1 + random.uniform(-jitter, jitter))
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self._delivery.retry_after_max))
        if delivery.age + delay > max_age:
            return None, "max age exceeded"
        return delay, ""

    def spill(self, delivery: Delivery, reason: str, delay: float | None = None) -> None:
        """The lane could not take the delivery: park it in a retry tier for ``delay`` seconds (the first
        tier's delay when None, never longer than the longest tier). Not an attempt. Dead-lettered with
        ``reason`` instead when ``max_age`` ran out since its first attempt, or, never attempted, when it
        has waited ``max_pending``."""
        if delivery.ticket.fenced:
            return
        retry = self._retry
        if delivery.first_attempt:
            if delivery.age >= (delivery.subscription.retry.max_age or retry.max_age):
                self.dead_letter(delivery, reason)
                return
        elif delivery.waited >= retry.max_pending:
            self.dead_letter(delivery, f"{reason}: not attempted within {retry.max_pending:.0f}s")
            return
        self.stats["spilled"] += 1
        if delivery.spilled:
            self.stats["respilled"] += 1
        self.outcomes[(delivery.subscription.id, "spilled")] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("spilled to a retry tier", extra=delivery_fields(delivery, reason=reason))
        delay = retry.tiers[0] if delay is None else min(delay, retry.tiers[-1])
        self._to_retry_tier(delivery, delay, reason, None)

    def tier_for(self, delay: float) -> int:
        """The smallest tier whose delay is at least ``delay`` (the last tier for longer delays)."""
        return min(bisect.bisect_left(self._retry.tiers, delay), len(self._retry.tiers) - 1)

    def _to_retry_tier(self, delivery: Delivery, delay: float, reason: str, status: int | None) -> None:
        now_ms = int(time.time() * 1000)
        extra: dict[str, str | int | None] = {
            H.NOT_BEFORE: now_ms + int(delay * 1000),
            H.REASON: reason,
            H.STATUS: status,
        }
        topic = self._topics.retry(self.tier_for(delay))
        headers = self._headers(delivery, extra)
        self._hand_off(
            topic, delivery.event.key, delivery.event.value, headers, delivery.ticket, delivery.trace
        )

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str, status: int | None = None) -> None:
        if delivery.ticket.fenced:
            return
        sub_id = delivery.subscription.id
        self.stats["dead_lettered"] += 1
        self.dead_letter_reasons[reason] += 1
        self.outcomes[(sub_id, "dead_lettered")] += 1
        self.dead_letters[(sub_id, reason_kind(reason))] += 1
        log.warning(
            "dead-lettered", extra=delivery_fields(delivery, reason=reason, attempts=delivery.attempt)
        )
        headers = self._headers(delivery, {H.REASON: reason, H.STATUS: status})
        self._hand_off(
            self._topics.dlq,
            delivery.event.key,
            delivery.event.value,
            headers,
            delivery.ticket,
            delivery.trace,
        )
        if reason != DISABLED_REASON:
            self.ops.dead_lettered(delivery, reason)

    def poison(self, record: SourceRecord, reason: str, ticket: Settlement, trace: object = None) -> None:
        """A record that could not be decoded: dead letter it with the reason, so the offset can move on."""
        self.stats["poison"] += 1
        self.dead_letter_reasons["poison: " + reason.split(":")[0]] += 1
        self.dead_letters[("", "poison")] += 1
        log.warning(
            "poison record", extra={"topic": record.topic(), "offset": record.offset(), "reason": reason}
        )
        extra = H.encode(
            {
                H.REASON: f"poison record: {reason}",
                H.GROUP: self._group,
                H.ORIGIN_TOPIC: record.topic(),
                H.ORIGIN_PARTITION: record.partition(),
                H.ORIGIN_OFFSET: record.offset(),
                H.ORIGIN_TIMESTAMP: record.timestamp()[1],
            }
        )
        self._hand_off(
            self._topics.dlq,
            record.key(),
            record.value(),
            H.original(record.headers()) + extra,
            ticket,
            trace,
        )

    def _headers(self, delivery: Delivery, extra: dict[str, str | int | None]) -> Headers:
        event = delivery.event
        values: dict[str, str | int | None] = {
            H.SUBSCRIPTION: delivery.subscription.id,
            H.GROUP: self._group,
            H.ATTEMPT: delivery.attempt,
            H.ORIGIN_TOPIC: event.topic,
            H.ORIGIN_PARTITION: event.partition,
            H.ORIGIN_OFFSET: event.offset,
            H.ORIGIN_TIMESTAMP: int(event.time * 1000),
            H.FIRST_ATTEMPT: int(delivery.first_attempt * 1000) or None,
            H.RECEIVED: int(delivery.received * 1000) or None,
            H.EVENT_ID: event.id,
            H.LAST_ERROR: delivery.last_error,
            **extra,
        }
        return H.original(event.headers) + H.encode(values)

    # -- hand-off --------------------------------------------------------------------------------

    def _hand_off(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        ticket: Settlement,
        trace: object = None,
    ) -> None:
        """Write the record; release ``ticket`` once the broker acknowledged it (``handoff.HandOff``)."""
        self._writer.write(topic, key, value, headers, ticket, trace)
