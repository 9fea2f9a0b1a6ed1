"""The Protocols the layers meet through, and the values that cross them.

- ``RecordSink`` (implemented in ``fanout.kafka``): the one boundary the pipeline writes through.
  ``produce`` never blocks. It returns a future that resolves (on the event loop) once the broker
  acknowledged the record with acks=all, or fails with the producer's error. Callers count a hand-off as
  settled only when the future succeeded. The result says where the record was written; the pipeline
  ignores it (the publish API reports it).
- ``SourceRecord``: the parts of a consumed Kafka record the pipeline reads (``confluent_kafka.Message``
  fits).
- ``PipelineTracer`` / ``TracedSpan`` (implemented in ``fanout.telemetry``): what the pipeline tells
  tracing. Optional: ``Dispatcher.tracer`` and ``Settler.tracer`` stay None when tracing is off, so no
  span code runs.
- ``StatsSource`` (implemented by the runtime, read by telemetry): a ``DispatcherStats`` snapshot of the
  counters, the lanes and the consumer-group members, so that metrics and probes never reach into the
  runtime's objects.
- ``AttemptHistory`` (implemented in ``fanout.history.writer``): where settle reports how each delivery
  left it, one attempt record per attempt and per attempt-less outcome. Optional: ``Settler.history``
  stays None when ``history.record`` is ``off``, so nothing is built or checked per delivery.
- ``BatchTarget`` (implemented by the pipeline's ``Dispatcher``): where a consumer hands the records it
  fetched, with backpressure as the answer (see its docstring).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fanout.model.attempt import AttemptResult, Outcome
from fanout.model.event import Event, Headers, Settlement


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int


class RecordSink(Protocol):
    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]: ...


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the pipeline reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


# -- the delivery history -------------------------------------------------------------------------


class AttemptHistory(Protocol):
    """Where the pipeline writes attempt records (``fanout.history.writer.SinkAttemptLog``).

    ``wants(outcome)``: whether a record of this outcome is written at all (``history.record``); the
    pipeline asks first and builds nothing when it is not. ``write`` never blocks and never raises: it
    writes the record of ``event``'s delivery to ``subscription`` (``attempt``: the HTTP attempts made,
    this record's included; ``result``: the attempt this record reports, if a request went out;
    ``error``: the delivery's last error; ``retry``: (tier, not-before epoch ms); ``reason``: a dead
    letter's, spill's or drop's) and releases one share of ``ticket`` once the broker acknowledged it,
    like a retry or dead-letter hand-off: the source offset commits only after its attempt records.
    A retriable failure is written again until acknowledged or until ``ticket`` is fenced; a record the
    broker refuses for good is dropped and counted (the share is released: history never stalls a
    partition)."""

    def wants(self, outcome: Outcome) -> bool: ...

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
    ) -> None: ...


# -- telemetry hooks ------------------------------------------------------------------------------


class TracedSpan(Protocol):
    """A started span: a record's process span, or a retry or dead-letter write."""

    def decoded(self, event: Event, matched: int) -> None: ...
    def failed(self, reason: str) -> None: ...
    def end(self) -> None: ...


class PipelineTracer(Protocol):
    def record(self, record: SourceRecord, retry: bool) -> TracedSpan:
        """Start the process span of a consumed record (the caller ends it)."""
        ...

    def hand_off(self, topic: str, parent: object, headers: Headers) -> tuple[TracedSpan, Headers]:
        """Start the span of a retry or dead-letter write (``parent``: a delivery's ``trace``); return it
        and the headers to write (with the span's context added)."""
        ...


# -- the stats snapshot ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaneState:
    """One subscription's lane in one group member. ``circuit`` is ``closed``, ``half-open`` or
    ``open``; None for a lane without a breaker (key-ordered)."""

    subscription: str
    queued: int
    in_flight: int
    rate_waits: int
    circuit: str | None


@dataclass(frozen=True, slots=True)
class MemberState:
    """One consumer-group member. ``last_cycle`` and ``statistics_at`` are ``time.monotonic()`` values:
    the poll loop's last completed cycle, and when librdkafka's statistics last came (0: never).
    ``lag``: records behind, per owned (topic, partition). ``retry_topics``: the retry tiers it
    consumes (the shared group's member only)."""

    group: str
    joined: bool
    assigned: int
    last_cycle: float
    statistics_at: float
    brokers_up: bool
    lag: Mapping[tuple[str, int], int]
    retry_topics: frozenset[str]


@dataclass(frozen=True, slots=True)
class DispatcherStats:
    """What a dispatcher process has done and holds, at one moment.

    ``outcomes``: deliveries by (subscription id, outcome), the outcomes being ``delivered``,
    ``retried``, ``spilled``, ``dead_lettered`` and ``dropped`` (subscription deleted).
    ``dead_letters``: dead letters by (subscription id, reason kind), subscription "" for poison records.
    ``shared``: the member of the shared group (None until started); ``ordered``: one member per
    key-ordered subscription. ``subscriptions``: the routing table's size; ``disabled``: the ids of its
    disabled subscriptions."""

    started: bool
    outcomes: Mapping[tuple[str, str], int]
    dead_letters: Mapping[tuple[str, str], int]
    lanes: Sequence[LaneState]
    shared: MemberState | None
    ordered: Sequence[MemberState]
    subscriptions: int
    disabled: Sequence[str]

    @property
    def members(self) -> tuple[MemberState, ...]:
        """Every member, the shared group's first."""
        return (*((self.shared,) if self.shared is not None else ()), *self.ordered)


class StatsSource(Protocol):
    def snapshot(self, lanes: bool = True) -> DispatcherStats:
        """The current stats. Never blocks; may be called from another thread than the event loop's
        (an OTLP export), so it copies what it reads. ``lanes=False`` leaves ``lanes`` empty: the one
        part whose cost grows with the number of subscriptions, which the probes do not need."""
        ...


R_contra = TypeVar("R_contra", contravariant=True)


class BatchTarget(Protocol[R_contra]):
    """Takes the batches a consumer fetched, or answers "not now".

    - ``submit(batch)`` runs on the event loop thread, and never blocks or awaits. True: the target took
      the whole batch; every record is now its to settle. False: the target is at capacity and took
      nothing; the caller keeps the batch and submits the same records again, before any record fetched
      after them, once ``ready`` is set (records of partitions revoked meanwhile are dropped, not
      submitted). A batch submitted while ``ready`` is set is taken whole, even when taking it brings the
      target to capacity.
    - ``ready`` is set while the target takes batches and cleared while it is at capacity; only the
      target sets or clears it, on the loop. Any thread may read it (``is_set()``: a flag read, cheap
      enough for every poll cycle) or wait on it: the consumer thread fetches nothing while it is clear.
    """

    @property
    def ready(self) -> threading.Event: ...

    def submit(self, batch: Sequence[R_contra]) -> bool: ...
