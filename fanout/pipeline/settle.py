"""settle: every delivery ends as success, a retry-tier record, or a dead letter.

``Settler`` decides and tells; the parts do the rest:

- ``RetryPolicy`` (``fanout.pipeline.retry_policy``): the next delay, the tier, when a spill may wait
  no longer;
- ``RecordWriter`` (``fanout.pipeline.records``): the retry and dead-letter records with their header
  contract, written through ``HandOff``: a hand-off counts as settled only when the broker acknowledged
  the produce; until then the source offset stays uncommitted;
- ``SettleCounts`` (``fanout.pipeline.counts``): what happened, for metrics and logs;
- ``OpsEvents`` (``fanout.pipeline.ops``): ``failing`` after ``failing_after`` consecutive failed
  attempts of a subscription, ``dead_lettered`` for every dead letter but those of disabled
  subscriptions.

A 410 Gone dead-letters the delivery and calls ``on_gone`` (the runtime disables the subscription:
``fanout.control.disable``). A spill (lane full, circuit open, paced) is not an attempt: it comes back
when its lane said (``Spilled.retry_after``). Outcomes of a fenced ticket (a revoked partition) are
dropped: the partition's new owner delivers them.

With a ``history`` (the ``AttemptHistory`` port; None when ``history.record`` is ``off``, and then
nothing here costs more), every attempt and every attempt-less outcome also writes an attempt record
that holds one share of the delivery's ticket until the broker acknowledged it
(``fanout.history.writer`` lists where each outcome is recorded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fanout.model.attempt import Outcome
from fanout.model.errors import DeliveryError, EndpointGone, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery, Event, Settlement
from fanout.model.log_fields import delivery_fields
from fanout.model.ports import AttemptHistory, PipelineTracer, SourceRecord
from fanout.pipeline.counts import DISABLED_REASON
from fanout.pipeline.lanes import Spilled
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.records import RecordWriter
from fanout.pipeline.retry_policy import RetryPolicy

log = logging.getLogger("fanout.settle")


class Settler:
    """Turns outcomes into acknowledged records. ``counts`` (the writer's) counts what happened."""

    def __init__(
        self,
        policy: RetryPolicy,
        writer: RecordWriter,
        ops: OpsEvents,
        failing_after: int,
        on_gone: Callable[[Delivery], None],
        on_failing: Callable[[Delivery, int], None] | None = None,
    ) -> None:
        if len(writer.topics.retry) != len(policy.tiers):
            raise ValueError(f"{len(policy.tiers)} retry tiers but {len(writer.topics.retry)} retry topics")
        self.policy = policy
        self.writer = writer
        self.counts = writer.counts
        self._ops = ops
        self._failing_after = failing_after
        self._on_gone = on_gone
        self._on_failing = on_failing
        self._consecutive: dict[str, int] = {}
        self.history: AttemptHistory | None = None

    @property
    def tracer(self) -> PipelineTracer | None:
        return self.writer.tracer

    @tracer.setter
    def tracer(self, tracer: PipelineTracer | None) -> None:
        self.writer.tracer = tracer

    # -- outcomes reported by the lanes ------------------------------------------------------------

    def done(self, delivery: Delivery, error: DeliveryError | None, duration: float) -> None:
        """The outcome of an attempt (or a spill) from a lane: settle it."""
        if delivery.ticket.fenced:
            self.counts.fenced()
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
        delay, reason = self.policy.next_delay(delivery, error.retry_after)
        if delay is None:
            self.dead_letter(delivery, reason, error.status)
            return
        self.counts.retried(delivery.subscription.id)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "attempt failed; retrying in %.1fs",
                delay,
                extra=delivery_fields(delivery, attempt=delivery.attempt, error=error.error),
            )
        tier = self.policy.tier_for(delay)
        not_before = self.writer.retry(delivery, tier, delay, "", error.status)
        self._record(delivery, Outcome.RETRY_SCHEDULED, retry=(tier, not_before))

    def delivered(self, delivery: Delivery) -> None:
        self.counts.delivered(delivery.subscription.id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("delivered", extra=delivery_fields(delivery, attempt=delivery.attempt + 1))
        self._consecutive.pop(delivery.subscription.id, None)
        history = self.history
        if history is not None and history.wants(Outcome.DELIVERED):
            result, delivery.result = delivery.result, None
            history.write(  # its acknowledgement releases the delivery's share
                Outcome.DELIVERED,
                delivery.event,
                delivery.subscription.id,
                delivery.attempt + 1,
                delivery.ticket,
                traceparent=delivery.traceparent,
                result=result,
            )
            return
        delivery.ticket.release()

    def retried_in_place(self, delivery: Delivery) -> None:
        """A key-ordered lane tries the failed attempt again in place (no retry tier)."""
        self.counts.retried_in_place(delivery.subscription.id)
        self._record(delivery, Outcome.RETRY_SCHEDULED)

    def dropped(
        self, event: Event, sub_id: str, attempt: int, ticket: Settlement, traceparent: str | None = None
    ) -> None:
        """A delivery to ``sub_id``, deleted meanwhile, is dropped: counted, recorded, settled."""
        self.counts.dropped(sub_id)
        history = self.history
        if history is not None and history.wants(Outcome.DROPPED):
            history.write(
                Outcome.DROPPED,
                event,
                sub_id,
                attempt,
                ticket,
                traceparent=traceparent,
                reason="subscription deleted",
            )
            return
        ticket.release()

    def _record(
        self,
        delivery: Delivery,
        outcome: Outcome,
        retry: tuple[int, int] | None = None,
        reason: str | None = None,
    ) -> None:
        """Write ``delivery``'s attempt record (with its latest attempt, if one was made since the last
        record) holding one more share of its ticket."""
        history = self.history
        if history is None or not history.wants(outcome):
            return
        result, delivery.result = delivery.result, None
        delivery.ticket.add(1)
        history.write(
            outcome,
            delivery.event,
            delivery.subscription.id,
            delivery.attempt,
            delivery.ticket,
            traceparent=delivery.traceparent,
            result=result,
            error=delivery.last_error or None,
            retry=retry,
            reason=reason,
        )

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

    def next_delay(self, delivery: Delivery, error: RetryableDelivery) -> tuple[float | None, str]:
        """``RetryPolicy.next_delay`` for a failed attempt (key-ordered lanes retry in place with it)."""
        return self.policy.next_delay(delivery, error.retry_after)

    def _count_failure(self, delivery: Delivery) -> None:
        sub_id = delivery.subscription.id
        n = self._consecutive.get(sub_id, 0) + 1
        self._consecutive[sub_id] = n
        if n == self._failing_after:
            log.warning(
                "subscription failing: %d consecutive failed attempts",
                n,
                extra=delivery_fields(delivery, error=delivery.last_error),
            )
            self._ops.failing(delivery, n)
            if self._on_failing is not None:
                self._on_failing(delivery, n)

    def spill(self, delivery: Delivery, reason: str, delay: float | None = None) -> None:
        """The lane could not take the delivery: park it in a retry tier for ``delay`` seconds
        (``RetryPolicy.spill_delay``). Not an attempt. Dead-lettered instead when it may wait no longer
        (``RetryPolicy.spill_expired``)."""
        if delivery.ticket.fenced:
            return
        expired = self.policy.spill_expired(delivery, reason)
        if expired is not None:
            self.dead_letter(delivery, expired)
            return
        self.counts.spilled(delivery.subscription.id, again=bool(delivery.spilled))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("spilled to a retry tier", extra=delivery_fields(delivery, reason=reason))
        delay = self.policy.spill_delay(delay)
        tier = self.policy.tier_for(delay)
        not_before = self.writer.retry(delivery, tier, delay, reason, None)
        self._record(delivery, Outcome.SPILLED, retry=(tier, not_before), reason=reason)

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str, status: int | None = None) -> None:
        if delivery.ticket.fenced:
            return
        self.counts.dead_lettered(delivery.subscription.id, reason)
        log.warning(
            "dead-lettered", extra=delivery_fields(delivery, reason=reason, attempts=delivery.attempt)
        )
        self.writer.dead_letter(delivery, reason, status)
        disabled = reason == DISABLED_REASON
        self._record(delivery, Outcome.DISABLED if disabled else Outcome.DEAD_LETTERED, reason=reason)
        if not disabled:
            self._ops.dead_lettered(delivery, reason)

    def poison(self, record: SourceRecord, reason: str, ticket: Settlement, trace: object = None) -> None:
        """A record that could not be decoded: dead letter it with the reason, so the offset can move on."""
        self.counts.poison()
        log.warning(
            "poison record", extra={"topic": record.topic(), "offset": record.offset(), "reason": reason}
        )
        self.writer.poison(record, reason, ticket, trace)
