"""The writer's side of the history: which outcomes ``history.record`` keeps, and ``SinkAttemptLog``,
the ``AttemptHistory`` port (``fanout.model.ports``) over a ``RecordSink``.

How the pipeline uses it (``fanout.pipeline.settle``): every way a delivery leaves settle asks
``log.wants(outcome)`` first, and only then writes; each record holds one share of the delivery's
ticket, released once the broker acknowledged the record. The source offset therefore commits only
after its attempt records are acknowledged, exactly like a retry or dead-letter hand-off, and the
history is complete across a ``kill -9`` (re-sent attempts show up as the extra attempts they were).
The ways out:

==================  ==========================================================  =====================
outcome             where                                                       request / response
==================  ==========================================================  =====================
delivered           ``Settler.delivered`` (the 2xx of a lane's attempt)         yes
retry_scheduled     ``Settler.done``: retry tier and not-before; a key-ordered  yes
                    lane's retry in place (no tier)
dead_lettered       ``Settler.give_up`` / exhausted schedule or max age         yes (the last attempt)
dead_lettered       ``Settler.spill`` past its wait, a failed transform         no
spilled             ``Settler.spill`` (lane full, breaker open, paced)          no
dropped             ``Settler.dropped``: the subscription was deleted           no
disabled            ``Settler.dead_letter``: the subscription is disabled       no
==================  ==========================================================  =====================

A record is built straight into the JSON of ``schemas/attempt.schema.json`` (version 1) and encoded
once, with the bounds ``fanout.history.codec`` enforces: one dict and one ``orjson.dumps`` per record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from functools import partial
from time import time
from typing import Any, Literal, Protocol

from orjson import dumps

from fanout.history import record as R
from fanout.history.record import (
    MAX_CONTENT_TYPE,
    MAX_ERROR_CLASS,
    MAX_ERROR_MESSAGE,
    MAX_ID,
    MAX_REASON,
    MAX_SUBSCRIPTION,
    MAX_TIME_MS,
    MAX_TOPIC,
    MAX_TYPE,
    MIN_TIME_MS,
    SCHEMA_VERSION,
    Body,
    Outcome,
)
from fanout.model.attempt import AttemptResult
from fanout.model.errors import RecordRefused
from fanout.model.event import Event, Settlement
from fanout.pipeline.handoff import Backoff

log = logging.getLogger("fanout.history")

Mode = Literal["all", "failures", "off"]
_HEX_DIGITS = "0123456789abcdef"
_NO_TRACE = "0" * 32
DELIVERED = Outcome.DELIVERED
MAX_STAMP = MAX_TIME_MS // 1000


class AckSink(Protocol):
    """Where attempt records go (``fanout.kafka.loop_producer.LoopProducer.produce_then``): ``done(None)``
    on the loop once the broker acknowledged the record, ``done(error)`` when it failed (a
    ``RecordRefused`` for good, anything else retriable); no future per record."""

    def produce_then(
        self, topic: str, value: bytes, key: bytes | None, done: Callable[[Exception | None], None]
    ) -> None: ...


def recorded(mode: Mode, outcome: Outcome) -> bool:
    """``all``: every outcome; ``failures``: every outcome but delivered and spilled (non-2xx attempts
    and terminal outcomes); ``off``: none."""
    return mode == "all" or (mode == "failures" and outcome.failed)


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``): 32 lowercase hex
    digits, not all zero."""
    if not traceparent or len(traceparent) < 35 or traceparent[2] != "-":
        return None
    trace_id = traceparent[3:35]
    if trace_id.strip(_HEX_DIGITS) or trace_id == _NO_TRACE:  # strip leaves what is not hex
        return None
    return trace_id


def _body(data: bytes, limit: int, size: int | None = None) -> dict[str, Any] | None:
    """``Body.of(data, limit, size)`` as the schema's JSON object, without the object for the usual
    UTF-8 body."""
    if limit <= 0:
        return None
    head = data[: min(limit, R.MAX_BODY_BYTES)]
    total = len(data) if size is None else max(size, len(data))
    try:
        text = head.decode()
    except UnicodeDecodeError:
        body = Body.of(data, limit, size)
        if body is None:  # pragma: no cover - limit > 0
            return None
        return {"text": body.text, "encoding": body.encoding, "size": body.size, "truncated": body.truncated}
    return {"text": text, "encoding": "utf-8", "size": total, "truncated": total > len(head)}


class SinkAttemptLog:
    """An ``AttemptHistory`` writing to ``topic`` through ``sink`` (key = event id, no headers), as
    ``member``; ``response_bytes`` of each response body and ``payload_bytes`` of the event (with a
    delivery's first record) are kept. ``stats`` counts ``written``, ``retried`` (retriable failures)
    and ``refused`` (dropped for good)."""

    def __init__(
        self,
        sink: AckSink,
        topic: str,
        mode: Mode,
        member: str,
        response_bytes: int = 1024,
        payload_bytes: int = 0,
        backoff: Backoff | None = None,
    ) -> None:
        self._sink = sink
        self._topic = topic
        self.mode: Mode = mode
        self._wanted = frozenset(o for o in Outcome if recorded(mode, o))
        self._member = member[: R.MAX_MEMBER]
        self._response_bytes = response_bytes
        self._payload_bytes = payload_bytes
        self.backoff = backoff or Backoff()
        self.stats: Counter[str] = Counter()

    def wants(self, outcome: Outcome) -> bool:
        return outcome in self._wanted

    def write(
        self,
        outcome: Outcome,
        event: Event,
        subscription: str,
        attempt: int,
        ticket: Settlement,
        *,
        traceparent: str | None = None,
        result: AttemptResult | None = None,
        error: str | None = None,
        retry: tuple[int, int] | None = None,
        reason: str | None = None,
    ) -> None:
        value = self.encode(
            outcome,
            event,
            subscription,
            attempt,
            traceparent=traceparent,
            result=result,
            error=error,
            retry=retry,
            reason=reason,
        )
        self._produce(value, event.id.encode(), ticket, 0)

    def encode(
        self,
        outcome: Outcome,
        event: Event,
        subscription: str,
        attempt: int,
        *,
        traceparent: str | None = None,
        result: AttemptResult | None = None,
        error: str | None = None,
        retry: tuple[int, int] | None = None,
        reason: str | None = None,
        now: float | None = None,
    ) -> bytes:
        """The record's value: the JSON of ``schemas/attempt.schema.json``. Written for the hot path (one
        call per attempt): module constants as locals, no helper call for the usual cases."""
        event_id = event.id[:MAX_ID]
        request = response = failure = None
        if result is not None:
            stamp = result.webhook_timestamp
            latency = result.latency
            request = {
                "webhook_id": event_id,
                "webhook_timestamp": stamp if 0 <= stamp <= MAX_STAMP else min(max(stamp, 0), MAX_STAMP),
                "latency_ms": round(latency * 1000, 3) if latency > 0.0 else 0.0,
            }
            status = result.status
            if status is not None and 100 <= status <= 999:
                content_type = result.content_type
                response = {
                    "status": status,
                    "content_type": None if content_type is None else content_type[:MAX_CONTENT_TYPE],
                    "body": _body(result.body, self._response_bytes, result.body_size),
                }
            if outcome is not DELIVERED:
                kind = result.error_class or "HTTPStatus"
                failure = {"class": kind[:MAX_ERROR_CLASS], "message": (error or "")[:MAX_ERROR_MESSAGE]}
        elif error and outcome is not DELIVERED and attempt > 0 and reason is None:
            failure = {"class": "NotSent", "message": error[:MAX_ERROR_MESSAGE]}
        payload = None
        if self._payload_bytes and attempt <= (1 if result is not None else 0):
            payload = _body(event.value, self._payload_bytes)
        event_ms = int(event.time * 1000)
        return dumps(
            {
                "version": SCHEMA_VERSION,
                "event_id": event_id,
                "event_type": event.type[:MAX_TYPE],
                "event_time_ms": event_ms if MIN_TIME_MS <= event_ms <= MAX_TIME_MS else None,
                "subscription": subscription[:MAX_SUBSCRIPTION],
                "attempt": attempt if attempt <= 1_000_000 else 1_000_000,
                "time_ms": int((time() if now is None else now) * 1000),
                "outcome": outcome.value,
                "retry": None if retry is None else {"tier": retry[0], "not_before_ms": retry[1]},
                "reason": None if reason is None else reason[:MAX_REASON],
                "request": request,
                "response": response,
                "error": failure,
                "origin": {
                    "topic": event.topic[:MAX_TOPIC],
                    "partition": event.partition,
                    "offset": event.offset,
                    "timestamp_ms": event.source_timestamp_ms,
                },
                "trace_id": None if traceparent is None else trace_id_of(traceparent),
                "member": self._member,
                "payload": payload,
            }
        )

    def _produce(self, value: bytes, key: bytes, ticket: Settlement, failures: int) -> None:
        self._sink.produce_then(self._topic, value, key, partial(self._acked, value, key, ticket, failures))

    def _acked(
        self, value: bytes, key: bytes, ticket: Settlement, failures: int, error: Exception | None
    ) -> None:
        if error is None:
            self.stats["written"] += 1
            ticket.release()
            return
        if isinstance(error, RecordRefused):
            self.stats["refused"] += 1
            log.error("attempt record refused by the broker; dropped: %s", error)
            ticket.release()
            return
        self.stats["retried"] += 1
        if ticket.fenced:  # the partition's new owner writes its own records
            return
        delay = self.backoff.delay(failures + 1)
        log.warning("could not write an attempt record, trying again in %.1fs: %s", delay, error)
        asyncio.get_running_loop().call_later(delay, self._produce, value, key, ticket, failures + 1)
