"""The dispatcher's metrics. Counters and gauges are observable instruments: the data path only bumps
plain integers (``SettleCounts``, ``Lane.rate_waits``...), which these callbacks read, through the
``StatsSource`` port (``fanout.model.ports``), when ``/metrics`` is scraped or OTLP exports: one
``DispatcherStats`` snapshot per collection. The histograms are bound cells (``histograms``) recorded
as things happen (``attempts``, ``on_retry_lag``).

=====================================================  ============================================
Prometheus name (labels)                               what
=====================================================  ============================================
``fanout_deliveries_total`` (subscription, outcome)    delivered, retried, spilled, dead_lettered,
                                                       dropped (subscription deleted)
``fanout_delivery_attempt_duration_seconds`` (subscription, result)   HTTP attempts: 2xx, 3xx, 4xx,
                                                       5xx, timeout, error
``fanout_delivery_latency_seconds`` (subscription)     event time → 2xx response
``fanout_dead_letters_total`` (subscription, reason)   dead letters by reason kind (poison: no
                                                       subscription label)
``fanout_lane_in_flight``, ``fanout_lane_queued`` (subscription)   requests out, deliveries waiting
``fanout_rate_limit_waits_total`` (subscription)       times a lane waited for a rate-limit token
``fanout_decode_dropped_attributes_total`` (attribute) source-record values dropped for invalid syntax:
                                                       traceparent, tracestate, content-type,
                                                       datacontenttype
``fanout_filter_errors_total`` (subscription)          ``filter_expr`` evaluations that failed (a
                                                       missing field, a type mismatch): no match
``fanout_circuit_state`` (subscription)                0 closed, 1 half-open, 2 open
``fanout_consumer_lag`` (group, topic, partition)      records behind, per owned partition
``fanout_retry_tier_depth`` (tier)                     records waiting in the owned retry partitions
``fanout_retry_tier_lag_seconds`` (tier)               how late retry records leave their tier
``fanout_routing_table_subscriptions``                 subscriptions in the routing table
``fanout_subscriptions_disabled``                      disabled subscriptions (count)
``fanout_subscription_disabled`` (subscription)        1 for each disabled subscription
``fanout_consumer_assigned_partitions`` (group)        partitions this process owns
``fanout_poll_loop_age_seconds`` (group)               time since the poll loop's last cycle
=====================================================  ============================================

The subscription label is capped (``telemetry.max_subscription_labels``); the rest are ``_other``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping

from opentelemetry.metrics import CallbackOptions, Observation

from fanout.model.ports import DispatcherStats, LaneState, StatsSource
from fanout.pipeline.expressions import FilterErrors
from fanout.telemetry.attempts import AttemptMetrics
from fanout.telemetry.histograms import HistogramCell
from fanout.telemetry.metrics import LabelCap, Metrics

CIRCUIT = {"closed": 0, "half-open": 1, "open": 2}
RETRY_LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class DispatcherMetrics:
    def __init__(self, metrics: Metrics, source: StatsSource, max_subscription_labels: int) -> None:
        self.source = source
        self._stats: DispatcherStats | None = None
        metrics.between_collections(self._forget)
        self.cap = LabelCap(max_subscription_labels)
        meter = metrics.meter
        self.attempts = AttemptMetrics(metrics.histograms, self.cap)
        self.retry_lag = metrics.histograms.create(
            "fanout.retry.tier.lag",
            "s",
            "How late retry records are taken from their tier (now minus not-before time)",
            RETRY_LAG_BUCKETS,
        )
        self._tier_cells: dict[str, HistogramCell] = {}
        self.dropped_attributes: Counter[str] = Counter()  # shared by every member's dispatcher
        self.filter_errors = FilterErrors()  # shared too
        observables = (
            (meter.create_observable_counter, "fanout.deliveries", self._deliveries, "Deliveries by outcome"),
            (meter.create_observable_counter, "fanout.dead_letters", self._dead_letters, "Dead letters"),
            (meter.create_observable_gauge, "fanout.lane.in_flight", self._in_flight, "Requests in flight"),
            (meter.create_observable_gauge, "fanout.lane.queued", self._queued, "Deliveries queued"),
            (
                meter.create_observable_counter,
                "fanout.rate_limit.waits",
                self._rate_waits,
                "Rate-limit waits",
            ),
            (
                meter.create_observable_counter,
                "fanout.decode.dropped_attributes",
                self._dropped_attributes,
                "Header-bound attributes decode dropped for invalid syntax",
            ),
            (
                meter.create_observable_counter,
                "fanout.filter.errors",
                self._filter_errors,
                "filter_expr evaluations that failed (no match)",
            ),
            (
                meter.create_observable_gauge,
                "fanout.circuit.state",
                self._circuits,
                "0 closed, 1 half-open, 2 open",
            ),
            (
                meter.create_observable_gauge,
                "fanout.consumer.lag",
                self._lag,
                "Records behind, per partition",
            ),
            (
                meter.create_observable_gauge,
                "fanout.retry.tier.depth",
                self._tier_depth,
                "Records in retry tiers",
            ),
            (
                meter.create_observable_gauge,
                "fanout.routing_table.subscriptions",
                self._table_size,
                "Subscriptions in the routing table",
            ),
            (
                meter.create_observable_gauge,
                "fanout.subscriptions.disabled",
                self._disabled_count,
                "Disabled subscriptions",
            ),
            (
                meter.create_observable_gauge,
                "fanout.subscription.disabled",
                self._disabled,
                "1 for each disabled subscription",
            ),
            (
                meter.create_observable_gauge,
                "fanout.consumer.assigned_partitions",
                self._assigned,
                "Partitions owned",
            ),
        )
        for create, name, callback, description in observables:
            create(name, callbacks=[callback], description=description)
        meter.create_observable_gauge(
            "fanout.poll_loop.age", callbacks=[self._loop_age], unit="s", description="Since the last poll"
        )

    # -- called on the data path ---------------------------------------------------------------------

    def on_retry_lag(self, topic: str, seconds: float) -> None:
        cell = self._tier_cells.get(topic)
        if cell is None:
            cell = self._tier_cells[topic] = self.retry_lag.cell({"tier": topic.rsplit(".", 1)[-1]})
        cell.record(seconds)

    # -- callbacks -------------------------------------------------------------------------------------

    def _forget(self) -> None:
        self._stats = None

    def _snapshot(self) -> DispatcherStats:
        """The collection's snapshot (taken by its first callback, forgotten between collections)."""
        stats = self._stats
        if stats is None:
            stats = self._stats = self.source.snapshot()
        return stats

    def _capped(self, counts: Mapping[tuple[str, str], int], name: str) -> Iterator[Observation]:
        totals: Counter[tuple[str, str]] = Counter()
        for (sub_id, value), n in counts.items():
            totals[(self.cap(sub_id) if sub_id else "", value)] += n
        for (label, value), n in totals.items():
            attributes = {name: value, "subscription": label} if label else {name: value}
            yield Observation(n, attributes)

    def _deliveries(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._capped(self._snapshot().outcomes, "outcome")

    def _dead_letters(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._capped(self._snapshot().dead_letters, "reason")

    def _per_lane(self, value: Callable[[LaneState], int]) -> Iterator[Observation]:
        totals: Counter[str] = Counter()
        for lane in self._snapshot().lanes:
            totals[self.cap(lane.subscription)] += value(lane)
        for label, n in totals.items():
            yield Observation(n, {"subscription": label})

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_lane(lambda lane: lane.in_flight)

    def _queued(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_lane(lambda lane: lane.queued)

    def _rate_waits(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_lane(lambda lane: lane.rate_waits)

    def _dropped_attributes(self, options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(n, {"attribute": name}) for name, n in sorted(self.dropped_attributes.items()))

    def _filter_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: Counter[str] = Counter()
        for sub_id, n in list(self.filter_errors.counts.items()):
            totals[self.cap(sub_id)] += n
        return (Observation(n, {"subscription": label}) for label, n in totals.items())

    def _circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        worst: dict[str, int] = {}
        for lane in self._snapshot().lanes:
            if lane.circuit is not None:
                label = self.cap(lane.subscription)
                worst[label] = max(worst.get(label, 0), CIRCUIT.get(lane.circuit, 0))
        return (Observation(state, {"subscription": label}) for label, state in worst.items())

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        for member in self._snapshot().members:
            group = member.group
            for (topic, partition), lag in member.lag.items():
                yield Observation(lag, {"group": group, "topic": topic, "partition": str(partition)})

    def _tier_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        shared = self._snapshot().shared
        if shared is None:
            return
        depth: Counter[str] = Counter()
        for (topic, _), lag in shared.lag.items():
            if topic in shared.retry_topics:
                depth[topic] += lag
        for topic in sorted(shared.retry_topics):
            yield Observation(depth[topic], {"tier": topic.rsplit(".", 1)[-1]})

    def _table_size(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._snapshot().subscriptions)

    def _disabled_count(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(len(self._snapshot().disabled))

    def _disabled(self, options: CallbackOptions) -> Iterable[Observation]:
        for sub_id in self._snapshot().disabled:
            yield Observation(1, {"subscription": self.cap(sub_id)})

    def _assigned(self, options: CallbackOptions) -> Iterable[Observation]:
        for member in self._snapshot().members:
            yield Observation(member.assigned, {"group": member.group})

    def _loop_age(self, options: CallbackOptions) -> Iterable[Observation]:
        now = time.monotonic()
        for member in self._snapshot().members:
            yield Observation(now - member.last_cycle, {"group": member.group})
