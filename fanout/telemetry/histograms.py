"""Histograms aggregated in place on the data path, exported through the OpenTelemetry readers.

The SDK's ``Histogram.record`` costs several microseconds (it validates and hashes the attributes on
every call); the dispatcher records two per delivery. Here a caller resolves a ``HistogramCell`` once
per attribute set (a bound instrument) and ``record`` is a bisect and four updates. At collection
time ``LocalHistograms.metrics()`` turns the cells into ordinary OpenTelemetry ``Metric`` data
(explicit buckets, cumulative), which ``Metrics``' readers add to what the SDK collected: Prometheus
and OTLP see the same histograms as if the SDK had aggregated them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.metrics.export import AggregationTemporality, Histogram, HistogramDataPoint, Metric


class HistogramCell:
    """One attribute set of one histogram. Not locked: only the event loop records."""

    __slots__ = ("attributes", "bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: Sequence[float], attributes: Mapping[str, str]) -> None:
        self.bounds = bounds
        self.attributes = dict(attributes)
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def record(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value


class LocalHistogram:
    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._cells: dict[frozenset[tuple[str, str]], HistogramCell] = {}

    def cell(self, attributes: Mapping[str, str]) -> HistogramCell:
        """The cell of ``attributes``; callers keep it and call ``record`` on it."""
        key = frozenset(attributes.items())
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = HistogramCell(self.bounds, attributes)
        return cell

    def metric(self, start_ns: int, now_ns: int) -> Metric | None:
        points = [
            HistogramDataPoint(
                attributes=cell.attributes,
                start_time_unix_nano=start_ns,
                time_unix_nano=now_ns,
                count=sum(counts),
                sum=cell.sum,
                bucket_counts=counts,
                explicit_bounds=self.bounds,
                min=cell.min,
                max=cell.max,
            )
            for cell in list(self._cells.values())
            if cell.count and (counts := list(cell.counts))
        ]
        if not points:
            return None
        return Metric(
            self.name,
            self.description,
            self.unit,
            Histogram(points, AggregationTemporality.CUMULATIVE),
        )


class LocalHistograms:
    def __init__(self) -> None:
        self._start_ns = time.time_ns()
        self._histograms: list[LocalHistogram] = []

    def create(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> LocalHistogram:
        histogram = LocalHistogram(name, unit, description, bounds)
        self._histograms.append(histogram)
        return histogram

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        return [m for h in list(self._histograms) if (m := h.metric(self._start_ns, now)) is not None]
