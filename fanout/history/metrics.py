"""The history index's metrics, read from ``HistoryStatus`` when scraped (the API registers them).

=====================================  ==================================================================
Prometheus name                        what
=====================================  ==================================================================
``fanout_history_lag_seconds``         0 when the index holds the whole attempts topic, else the age of
                                       the last record it indexed (absent until the lag is known)
``fanout_history_lag_records``         attempt records not indexed yet
``fanout_history_indexed_total``       records indexed by this process
``fanout_history_skipped_total``       values of the attempts topic that were not attempt records
``fanout_history_rebuilds_total``      times the index file was found corrupt and rebuilt
=====================================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from fanout.history.status import HistoryStatus


def register_history_metrics(meter: Meter, status: Callable[[], HistoryStatus]) -> None:
    def lag_seconds(options: CallbackOptions) -> Iterable[Observation]:
        value = status().lag_seconds
        return [] if value is None else [Observation(value)]

    def lag_records(options: CallbackOptions) -> Iterable[Observation]:
        value = status().lag_records
        return [] if value is None else [Observation(value)]

    def counter(read: Callable[[HistoryStatus], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda options: [Observation(read(status()))]

    meter.create_observable_gauge(
        "fanout.history.lag", [lag_seconds], unit="s", description="How far the history index is behind"
    )
    meter.create_observable_gauge(
        "fanout.history.lag.records", [lag_records], description="Attempt records not indexed yet"
    )
    meter.create_observable_counter(
        "fanout.history.indexed", [counter(lambda s: s.indexed)], description="Attempt records indexed"
    )
    meter.create_observable_counter(
        "fanout.history.skipped",
        [counter(lambda s: s.skipped)],
        description="Values of the attempts topic that were not attempt records",
    )
    meter.create_observable_counter(
        "fanout.history.rebuilds",
        [counter(lambda s: s.rebuilds)],
        description="Times the history index was rebuilt from the attempts topic",
    )
