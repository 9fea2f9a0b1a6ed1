"""The dispatcher: records in, deliveries out, on the event loop thread.

``submit`` takes a batch handed over by the consumer thread, or refuses it while the lanes hold
fetching (``ready`` clear): the contract is ``model.ports.BatchTarget``'s. ``on_records`` takes a batch
unconditionally. Each record is tracked in its
partition's tracker, then either decoded and routed (source topics) or turned back into the one
delivery it carries (retry topics). A retry record written by another consumer group than ``group``
is skipped (counted as ``skipped_other_group``) and its offset moves on. A retry record finds its
subscription in ``addressable`` (by default the routing table): the shared group routes only the
unordered subscriptions, but replays to key-ordered ones come back through its retry tiers too, and
are delivered by its (unordered) lanes, like any replay (replayed events are out of order by nature;
a failing one spills to the tiers rather than pinning a shared offset). Every delivery is
offered to its subscription's lane; a refusal spills it to a retry tier, due back when the lane said.
Nothing here blocks or awaits: the loop keeps moving whatever one subscriber does.

Telemetry: with a ``tracer`` each record gets a process span, which its deliveries continue from;
without one, deliveries carry the source record's ``traceparent`` as it is. ``on_retry_lag(topic,
seconds)`` hears how late each retry record is taken from its tier. ``dropped_attributes`` counts, by
name, the source records' header-bound attributes (``traceparent``, ``tracestate``, content type) that
``decode`` dropped for invalid syntax. ``filter_errors`` counts failed ``filter_expr`` evaluations by
subscription (every table the dispatcher installs reports there).

A subscription's ``transform`` runs when its delivery is handed to the lane (fresh or from a retry
tier: the body is made again on every pass, never stored); a transform that fails dead-letters the
delivery with reason ``transform failed: ...``, so nothing half-built is sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from fanout.model import headers as H
from fanout.model.errors import PoisonRecord
from fanout.model.event import Delivery
from fanout.model.ports import PipelineTracer, SourceRecord, TracedSpan
from fanout.model.subscription import Subscription
from fanout.pipeline.counts import DISABLED_REASON
from fanout.pipeline.decode import decode
from fanout.pipeline.expressions import DEFAULT_MAX_BYTES, FilterErrors, TransformFailed, render
from fanout.pipeline.flow import Lanes
from fanout.pipeline.offsets import PartitionTracker, Ticket
from fanout.pipeline.ordered import KeyedLanes
from fanout.pipeline.route import RoutingTable
from fanout.pipeline.settle import Settler

log = logging.getLogger("fanout.dispatch")

TopicPartition = tuple[str, int]
TRANSFORM_FAILED = "transform failed"
DRAIN_POLL_SECONDS = 0.02


class Dispatcher:
    def __init__(
        self,
        table: RoutingTable,
        lanes: Lanes | KeyedLanes,
        settler: Settler,
        retry_topics: Iterable[str],
        group: str | None = None,
        transform_max_bytes: int = DEFAULT_MAX_BYTES,
        addressable: RoutingTable | None = None,
    ) -> None:
        self.table = table
        self.addressable = addressable if addressable is not None else table
        self.lanes = lanes
        self.settler = settler
        self.retry_topics = frozenset(retry_topics)
        self.group = group
        self.trackers: dict[TopicPartition, PartitionTracker] = {}
        self.tracer: PipelineTracer | None = None
        self.on_retry_lag: Callable[[str, float], None] | None = None
        self.dropped_attributes: Counter[str] = Counter()
        self.transform_max_bytes = transform_max_bytes

    @property
    def filter_errors(self) -> FilterErrors:
        return self.table.errors

    @filter_errors.setter
    def filter_errors(self, errors: FilterErrors) -> None:
        self.table.errors = errors

    # -- routing table ---------------------------------------------------------------------------

    def set_table(self, table: RoutingTable, addressable: RoutingTable | None = None) -> None:
        """Swap in a new table (and the table retry records are looked up in, ``table`` itself by
        default). Lanes of deleted subscriptions drop their queued deliveries (counted)."""
        old = self.table
        table.errors = old.errors
        self.table = table
        addressable = addressable if addressable is not None else table
        before, self.addressable = self.addressable, addressable
        gone = (old.subscriptions.keys() | before.subscriptions.keys()) - addressable.subscriptions.keys()
        table.errors.forget(old.subscriptions.keys() - table.subscriptions.keys())
        for sub_id in gone:
            for d in self.lanes.remove(sub_id):
                self.settler.dropped(d.event, sub_id, d.attempt, d.ticket, d.traceparent)
        for sub in addressable.subscriptions.values():
            lane = self.lanes.by_id.get(sub.id)
            if lane is not None and lane.sub is not sub:
                lane.update(sub)

    # -- assignment ------------------------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition], epoch: int) -> None:
        for tp in partitions:
            old = self.trackers.get(tp)
            if old is not None:
                old.close()
            self.trackers[tp] = PartitionTracker(tp[0], tp[1], epoch)

    def committable(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        chosen = (
            self.trackers
            if partitions is None
            else {tp: self.trackers[tp] for tp in partitions if tp in self.trackers}
        )
        offsets = {}
        for tp, tracker in chosen.items():
            offset = tracker.committable()
            if offset is not None:
                offsets[tp] = offset
        return offsets

    async def drain(
        self, partitions: Mapping[TopicPartition, int] | None, deadline: float
    ) -> dict[TopicPartition, int]:
        """Wait (until ``deadline``, monotonic) for the records of ``partitions`` (each with the epoch it
        was assigned in; ``None`` means every partition) to settle; then close their trackers and return
        the offsets to commit. A tracker of another epoch is left alone: the partition was assigned
        again meanwhile, and the newer tracker is not this drain's to close."""
        if partitions is None:
            chosen = dict(self.trackers)
        else:
            chosen = {
                tp: tracker
                for tp, epoch in partitions.items()
                if (tracker := self.trackers.get(tp)) is not None and tracker.epoch == epoch
            }
        while any(tracker.unsettled for tracker in chosen.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                left = sum(tracker.unsettled for tracker in chosen.values())
                log.warning("drain deadline passed with %d records unsettled; they will be re-read", left)
                break
            await asyncio.sleep(min(remaining, DRAIN_POLL_SECONDS))
        offsets = {}
        for tp, tracker in chosen.items():
            offset = tracker.committable()
            if offset is not None:
                offsets[tp] = offset
            tracker.close()
            if self.trackers.get(tp) is tracker:
                del self.trackers[tp]
        return offsets

    # -- records ---------------------------------------------------------------------------------

    @property
    def ready(self) -> threading.Event:
        """Set while the dispatcher takes batches; cleared while its lanes hold fetching."""
        return self.lanes.ready

    def submit(self, batch: Sequence[SourceRecord]) -> bool:
        """Take ``batch`` whole (True), or nothing while at capacity (False: submit it again once
        ``ready`` is set). Never blocks."""
        if not self.lanes.ready.is_set():
            return False
        self.on_records(batch)
        return True

    def on_records(self, records: Sequence[SourceRecord]) -> None:
        trackers = self.trackers
        retry_topics = self.retry_topics
        tracer = self.tracer
        for record in records:
            topic = record.topic() or ""
            tracker = trackers.get((topic, record.partition() or 0))
            if tracker is None:
                continue  # revoked meanwhile: the next owner reads it
            ticket = tracker.track(record.offset() or 0)
            retry = topic in retry_topics
            if tracer is None:
                if retry:
                    self._retry_record(record, ticket)
                else:
                    self._source_record(record, topic, ticket)
                continue
            span = tracer.record(record, retry)
            try:
                if retry:
                    self._retry_record(record, ticket, span)
                else:
                    self._source_record(record, topic, ticket, span)
            finally:
                span.end()

    def _source_record(
        self, record: SourceRecord, topic: str, ticket: Ticket, span: TracedSpan | None = None
    ) -> None:
        try:
            event = decode(
                topic,
                record.partition() or 0,
                record.offset() or 0,
                record.key(),
                record.value(),
                record.headers(),
                record.timestamp()[1] / 1000,
                dropped=self.dropped_attributes,
            )
        except PoisonRecord as poison:
            if span is not None:
                span.failed(poison.reason)
            self.settler.poison(record, poison.reason, ticket, span)
            return
        kind, stamp = record.timestamp()
        if kind and stamp >= 0:
            event.source_timestamp_ms = stamp
        subs = self.table.route(event)
        if span is not None:
            span.decoded(event, len(subs))
        if subs:
            ticket.add(len(subs))
            now = time.time()
            traceparent = event.attributes.get("traceparent")
            for sub in subs:
                self._deliver(
                    Delivery(event, sub, 0, 0.0, ticket, traceparent=traceparent, trace=span, received=now)
                )
        ticket.release()

    def _retry_record(self, record: SourceRecord, ticket: Ticket, span: TracedSpan | None = None) -> None:
        if self.group is not None and not H.for_group(record.headers(), self.group):
            self.settler.counts.skipped_other_group()
            ticket.release()
            return
        fields, own = H.split(record.headers())
        try:
            meta = H.RetryMeta.of(fields)
            event = decode(
                meta.origin_topic,
                meta.origin_partition,
                meta.origin_offset,
                record.key(),
                record.value(),
                own,
                meta.origin_timestamp,
                event_id=meta.event_id,
            )
        except (ValueError, PoisonRecord) as exc:
            if span is not None:
                span.failed(str(exc))
            self.settler.poison(record, str(exc), ticket, span)
            return
        if self.on_retry_lag is not None:
            due = H.not_before_of(fields)
            if due is not None:
                self.on_retry_lag(record.topic() or "", max(0.0, time.time() - due / 1000))
        sub = self.addressable.get(meta.subscription)
        if span is not None:
            span.decoded(event, 0 if sub is None else 1)
        if meta.origin_timestamp > 0:
            event.source_timestamp_ms = int(meta.origin_timestamp * 1000)
        if sub is None:
            traceparent = event.attributes.get("traceparent")
            self.settler.dropped(event, meta.subscription, meta.attempt, ticket, traceparent)
            return
        delivery = Delivery(
            event,
            sub,
            meta.attempt,
            meta.first_attempt,
            ticket,
            meta.last_error,
            traceparent=event.attributes.get("traceparent"),
            trace=span,
            received=meta.received or meta.first_attempt or time.time(),
            spilled=meta.spilled,
        )
        self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        sub: Subscription = delivery.subscription
        if not sub.enabled:
            self.settler.dead_letter(delivery, DISABLED_REASON)
            return
        program = sub.transform_program
        if program is not None:
            try:
                delivery.body = render(program, delivery.event, self.transform_max_bytes)
            except TransformFailed as exc:
                self.settler.dead_letter(delivery, f"{TRANSFORM_FAILED}: {exc}")
                return
        lane = self.lanes.get(sub)
        refused = lane.offer(delivery)
        if refused is not None:
            self.settler.spill(delivery, refused.error, refused.retry_after)
