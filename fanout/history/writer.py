"""The writer's side of the history: the ``AttemptLog`` port settle writes through, which outcomes
``history.record`` keeps, a record built from a delivery, and the log over a ``RecordSink``.

How settle uses it (wired after the layout change): every way a delivery leaves settle asks
``log.wants(outcome)`` first, and only then builds the record (``record_of``), adds one pending share
to the delivery's ticket, and releases that share when the future ``log.write`` returned is done (not
when it is cancelled: the producer is closing). The source offset therefore commits only after the
attempt record is acknowledged, exactly like a retry or dead-letter hand-off, and the history is
complete across a ``kill -9`` (re-sent attempts show up as the extra attempts they were). The ways out:

==================  ==========================================================  =====================
outcome             where                                                       request / response
==================  ==========================================================  =====================
delivered           ``Settler.delivered`` (the 2xx of a lane's attempt)         yes
retry_scheduled     ``Settler.done``, retry path (tier and not-before known)    yes
dead_lettered       ``Settler.give_up`` / exhausted schedule or max age         yes (the last attempt)
dead_lettered       ``Settler.spill`` past max age, refused hand-offs           no
spilled             ``Settler.spill`` (lane full, breaker open, paced)          no
dropped             ``Dispatcher.set_table`` / ``_retry_record``: sub deleted   no
disabled            ``Dispatcher._deliver``: the subscription is disabled       no
==================  ==========================================================  =====================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal, Protocol

from fanout.history.codec import encode
from fanout.history.record import AttemptRecord, Body, Failure, Origin, Outcome, Request, Response, Retry
from fanout.model.errors import RecordRefused
from fanout.model.event import Delivery
from fanout.model.ports import RecordMetadata, RecordSink
from fanout.pipeline.handoff import Backoff

log = logging.getLogger("fanout.history")

Mode = Literal["all", "failures", "off"]


class AttemptLog(Protocol):
    """Where settle writes attempt records.

    ``wants(outcome)``: whether a record of this outcome is written at all (``history.record``); settle
    builds none when it is not. ``write(record, fenced)`` never blocks and never raises. Its future
    resolves once the broker acknowledged the record (acks=all); a retriable failure is retried with
    capped backoff until then, or until ``fenced()`` says the delivery's partition was revoked (the
    future resolves then too: the new owner writes its own records). A record the broker refuses for
    good is counted and dropped (the future resolves): history never stalls a partition. The future is
    cancelled only when the producer closes (the process stops; the offset stays uncommitted)."""

    def wants(self, outcome: Outcome) -> bool: ...

    def write(self, record: AttemptRecord, fenced: Callable[[], bool]) -> asyncio.Future[None]: ...


def recorded(mode: Mode, outcome: Outcome) -> bool:
    """``all``: every outcome; ``failures``: every outcome but delivered and spilled (non-2xx attempts
    and terminal outcomes); ``off``: none."""
    return mode == "all" or (mode == "failures" and outcome.failed)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    if not traceparent or len(traceparent) < 35 or traceparent[2] != "-":
        return None
    trace_id = traceparent[3:35]
    return trace_id if trace_id != "0" * 32 else None


def record_of(
    delivery: Delivery,
    outcome: Outcome,
    *,
    member: str,
    request: Request | None = None,
    response: Response | None = None,
    error: Failure | None = None,
    retry: Retry | None = None,
    reason: str | None = None,
    payload_bytes: int = 0,
    now: float | None = None,
) -> AttemptRecord:
    """The record of ``delivery``'s outcome. ``delivery.attempt`` must already count this record's
    attempt (settle increments it before deciding). The payload (``history.payload_bytes``) goes with
    the first record of a delivery only (no attempt made before this one)."""
    event = delivery.event
    first = delivery.attempt <= (1 if request is not None else 0)
    return AttemptRecord(
        event_id=event.id,
        subscription=delivery.subscription.id,
        outcome=outcome,
        time_ms=int((time.time() if now is None else now) * 1000),
        attempt=delivery.attempt,
        event_type=event.type,
        event_time_ms=int(event.time * 1000),
        origin=Origin(event.topic, event.partition, event.offset, None),
        request=request,
        response=response,
        error=error,
        retry=retry,
        reason=reason,
        trace_id=trace_id_of(delivery.traceparent),
        member=member,
        payload=Body.of(event.value, payload_bytes) if payload_bytes and first else None,
    )


class SinkAttemptLog:
    """An ``AttemptLog`` writing to ``topic`` through ``sink`` (key = event id, no headers). ``stats``
    counts ``written``, ``retried`` (retriable failures) and ``refused`` (dropped for good)."""

    def __init__(self, sink: RecordSink, topic: str, mode: Mode, backoff: Backoff | None = None) -> None:
        self._sink = sink
        self._topic = topic
        self.mode: Mode = mode
        self.backoff = backoff or Backoff()
        self.stats: Counter[str] = Counter()

    def wants(self, outcome: Outcome) -> bool:
        return recorded(self.mode, outcome)

    def write(self, record: AttemptRecord, fenced: Callable[[], bool]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._produce(encode(record), record.event_id.encode(), fenced, done, 0)
        return done

    def _produce(
        self, value: bytes, key: bytes, fenced: Callable[[], bool], done: asyncio.Future[None], failures: int
    ) -> None:
        if done.done():
            return
        if fenced():
            done.set_result(None)
            return
        future = self._sink.produce(self._topic, value, key, [])

        def acked(f: asyncio.Future[RecordMetadata]) -> None:
            if f.cancelled():  # the producer is closing: the process stops, the offset stays uncommitted
                done.cancel()
                return
            exc = f.exception()
            if exc is None:
                self.stats["written"] += 1
                if not done.done():
                    done.set_result(None)
                return
            if isinstance(exc, RecordRefused):
                self.stats["refused"] += 1
                log.error("attempt record refused by the broker; dropped: %s", exc)
                if not done.done():
                    done.set_result(None)
                return
            self.stats["retried"] += 1
            delay = self.backoff.delay(failures + 1)
            log.warning("could not write an attempt record, trying again in %.1fs: %s", delay, exc)
            asyncio.get_running_loop().call_later(
                delay, self._produce, value, key, fenced, done, failures + 1
            )

        future.add_done_callback(acked)
