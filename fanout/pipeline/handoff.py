"""hand-off: write a retry or dead-letter record, and release its ticket once the broker acknowledged it.

What ``HandOff.write`` does when the broker does not take the record:

- ``ProduceFailed``, retriable (broker down, timed out, not enough in-sync replicas, local queue full, or a
  fatal client error while the process stops): the same record is written again after ``Backoff.delay``
  (capped exponential with jitter) until the broker acknowledges it or its ticket is fenced. Its offset
  stays uncommitted meanwhile, so at-least-once holds however long the broker is away.
- ``RecordRefused`` / ``RecordTooLarge``, final: the record is never sent again as it is. ``fallback``
  gives what to write instead, to the dead-letter topic:

  1. a dead letter without the value: reason ``record too large`` (or ``record refused: <error>``), the
     key, the source record's headers and fanout's (subscription, attempt, origin, event id, last
     error, status) kept, and the dropped value's size in ``fanout-value-dropped``;
  2. if that is refused too (huge source headers or key): the same with fanout's headers only;
  3. if even that is refused there is nothing smaller to write (``fallback`` returns None): the record
     is dropped, its origin logged at ERROR, counted (``hand_off_dropped``), and its ticket released.
     Trying again forever would stall the partition at ``max_uncommitted`` and every later record
     with it, for a record that can never be written.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from fanout.model import headers as H
from fanout.model.errors import RecordRefused, RecordTooLarge
from fanout.model.event import Headers, Settlement
from fanout.model.ports import PipelineTracer, RecordMetadata, RecordSink
from fanout.pipeline.counts import REFUSED_REASON, TOO_LARGE_REASON, SettleCounts

log = logging.getLogger("fanout.settle")

MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: ``first``, doubling per failure, at most ``cap`` seconds,
    each delay scaled by a random factor in [1 - jitter, 1 + jitter] so that the hand-offs a broker
    outage failed together do not all come back in the same instant."""

    first: float = 0.5
    cap: float = 15.0
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) failed writes of one record in a row."""
        base = min(self.cap, self.first * 2.0 ** min(max(failures, 1) - 1, 32))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True, slots=True)
class Fallback:
    """A smaller dead letter to write in place of a refused record (its value is always dropped)."""

    key: bytes | None
    headers: Headers
    reason: str
    kind: str  # the reason as a label value
    first: bool  # the first fallback for this record (the one to count as a dead letter)


def refusal_reason(error: RecordRefused) -> tuple[str, str]:
    """The dead letter's reason for a refusal, and its label value."""
    if isinstance(error, RecordTooLarge):
        return TOO_LARGE_REASON, "record_too_large"
    return f"{REFUSED_REASON}: {error}"[:MAX_REASON_CHARS], "record_refused"


def fallback(
    key: bytes | None, value: bytes | None, headers: Headers, error: RecordRefused
) -> Fallback | None:
    """What to write to the dead-letter topic instead of the refused record (``key``, ``value``,
    ``headers``), or None when the refused record already was the smallest one (see the module doc)."""
    if not any(k == H.VALUE_DROPPED for k, _ in headers):
        reason, kind = refusal_reason(error)
        replaced = (H.REASON, H.NOT_BEFORE, H.VALUE_DROPPED)
        kept = [(k, v) for k, v in headers if k not in replaced]
        marks = H.encode({H.REASON: reason, H.VALUE_DROPPED: len(value or b"")})
        return Fallback(key, kept + marks, reason, kind, first=True)
    fanout_only = [(k, v) for k, v in headers if k.startswith(H.PREFIX)]
    if key is None and len(fanout_only) == len(headers):
        return None
    reason = H.as_dict(headers).get(H.REASON, "")
    return Fallback(None, fanout_only, reason, "", first=False)


class HandOff:
    """Writes records through a ``RecordSink``. ``counts`` hears of ``hand_off_errors`` (retriable
    failures), ``hand_off_refused`` (refusals replaced by a smaller dead letter; a record's first
    refusal is also its dead letter, by subscription id and reason kind) and ``hand_off_dropped``."""

    def __init__(self, sink: RecordSink, dlq: str, counts: SettleCounts) -> None:
        self._sink = sink
        self._dlq = dlq
        self._counts = counts
        self.tracer: PipelineTracer | None = None
        self.backoff = Backoff()

    def write(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        ticket: Settlement,
        trace: object = None,
        failures: int = 0,
    ) -> None:
        """Produce the record; release ``ticket`` when the broker acknowledged it (or, for a record
        refused for good, its smaller dead letter). Nothing happens once ``ticket`` is fenced."""
        span = None
        written = headers
        if self.tracer is not None:
            span, written = self.tracer.hand_off(topic, trace, headers)
        future = self._sink.produce(topic, value, key, written)

        def acked(f: asyncio.Future[RecordMetadata]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if span is not None:
                if exc is not None:
                    span.failed(str(exc))
                span.end()
            if exc is None:
                ticket.release()
                return
            if ticket.fenced:
                return
            if isinstance(exc, RecordRefused):
                self._refused(topic, key, value, headers, ticket, trace, exc)
                return
            self._counts.hand_off_error()
            delay = self.backoff.delay(failures + 1)
            log.error("could not write to %s, trying again in %.1fs: %s", topic, delay, exc)
            asyncio.get_running_loop().call_later(
                delay, self.write, topic, key, value, headers, ticket, trace, failures + 1
            )

        future.add_done_callback(acked)

    def _refused(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        ticket: Settlement,
        trace: object,
        error: RecordRefused,
    ) -> None:
        fields = H.as_dict(headers)
        where = {
            "topic": topic,
            "subscription": fields.get(H.SUBSCRIPTION),
            "origin_topic": fields.get(H.ORIGIN_TOPIC),
            "origin_partition": fields.get(H.ORIGIN_PARTITION),
            "origin_offset": fields.get(H.ORIGIN_OFFSET),
            "event_id": fields.get(H.EVENT_ID),
            "error": str(error),
        }
        smaller = fallback(key, value, headers, error)
        if smaller is None:
            self._counts.hand_off_dropped()
            log.error("dropped a record refused even without its value, key and headers", extra=where)
            ticket.release()
            return
        self._counts.refused(fields.get(H.SUBSCRIPTION, ""), smaller.kind, smaller.first)
        log.warning(
            "record refused by the broker; dead-lettering it without its value",
            extra={**where, "value_bytes": len(value or b""), "reason": smaller.reason},
        )
        self.write(self._dlq, smaller.key, None, smaller.headers, ticket, trace)
