"""Metrics through the OpenTelemetry metrics API, exposed in Prometheus format (``Metrics.handler``, an
aiohttp handler for ``GET /metrics``) and, when ``OTEL_METRICS_EXPORTER=otlp``, pushed over OTLP
(http/protobuf, every ``OTEL_METRIC_EXPORT_INTERVAL`` ms).

Each ``Metrics`` has its own provider and Prometheus registry, so several can live in one process
(tests). The API server mounts the same handler: ``app.router.add_get("/metrics", metrics.handler)``.
Histograms on a hot path can use ``Metrics.histograms`` (``fanout.telemetry.histograms``): the readers
here export them along with the SDK's instruments. ``between_collections`` registers a callback run
before every scrape and after every collection (a scrape or an OTLP export): observable instruments
reading one snapshot use it to take that snapshot once per collection.

Instrument names become Prometheus names by the exporter's rules: ``fanout.deliveries`` (a counter)
is scraped as ``fanout_deliveries_total``, a histogram ``fanout.delivery.latency`` with unit ``s`` as
``fanout_delivery_latency_seconds_{bucket,sum,count}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fanout import __version__
from fanout.telemetry.histograms import LocalHistograms
from fanout.telemetry.tracing import SCOPE, resource

OTHER = "_other"


class LabelCap:
    """Caps the distinct values of a label: the first ``limit`` values seen keep their name, later ones
    are reported as ``_other``. A value keeps its label for the life of the process (counters stay
    monotonic)."""

    __slots__ = ("_labels", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._labels: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        label = self._labels.get(value)
        if label is None:
            label = value if len(self._labels) < self.limit else OTHER
            self._labels[value] = label
        return label


Extra = Callable[[], list[Metric]]
Between = Callable[[], None]


def _nothing() -> None:
    pass


def with_extra(data: MetricsData | None, extra: list[Metric], fallback: Resource) -> MetricsData | None:
    """``data`` plus the ``extra`` metrics, in a scope of their own under the first resource."""
    if not extra:
        return data
    scope = ScopeMetrics(InstrumentationScope(SCOPE, __version__), extra, "")
    if data is None or not data.resource_metrics:
        return MetricsData([ResourceMetrics(fallback, [scope], "")])
    first, *rest = data.resource_metrics
    merged = ResourceMetrics(first.resource, [*first.scope_metrics, scope], first.schema_url)
    return MetricsData([merged, *rest])


class _WithExtra(MetricReader):
    """Adds the extra metrics to every collection (``Metrics`` keeps one SDK instrument,
    ``fanout.build_info``, so there is always a collection to add them to), then runs ``_after``."""

    _extra: Extra
    _fallback: Resource
    _after: Between

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._after()
        merged = with_extra(metrics_data, self._extra(), self._fallback)
        if merged is not None:
            super()._receive_metrics(merged, timeout_millis, **kwargs)  # type: ignore[safe-super]


class _PrometheusReader(_WithExtra, PrometheusMetricReader):
    def __init__(self, extra: Extra, fallback: Resource, after: Between = _nothing, **options: Any) -> None:
        self._extra = extra
        self._fallback = fallback
        self._after = after
        super().__init__(**options)


class _OtlpReader(_WithExtra, PeriodicExportingMetricReader):
    def __init__(
        self, exporter: MetricExporter, extra: Extra, fallback: Resource, after: Between = _nothing
    ) -> None:
        self._extra = extra
        self._fallback = fallback
        self._after = after
        super().__init__(exporter)


def _otlp_reader(
    environ: Mapping[str, str], extra: Extra, fallback: Resource, after: Between
) -> MetricReader | None:
    names = [n.strip().lower() for n in environ.get("OTEL_METRICS_EXPORTER", "none").split(",")]
    if "otlp" not in names or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return _OtlpReader(OTLPMetricExporter(), extra, fallback, after)


class Metrics:
    def __init__(
        self,
        service_name: str,
        environ: Mapping[str, str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.histograms = LocalHistograms()
        self._between: list[Between] = []
        own = resource(service_name, attributes)
        extra = self.histograms.metrics
        readers: list[MetricReader] = [
            _PrometheusReader(extra, own, self._collected, scope_info_enabled=False, registry=self.registry)
        ]
        otlp = _otlp_reader(os.environ if environ is None else environ, extra, own, self._collected)
        if otlp is not None:
            readers.append(otlp)
        self.provider = MeterProvider(metric_readers=readers, resource=own)
        self.meter: Meter = self.provider.get_meter(SCOPE, __version__)
        self.meter.create_observable_gauge(
            "fanout.build_info",
            callbacks=[lambda options: [Observation(1, {"version": __version__})]],
            description="1, labelled with the running fanout version",
        )

    def between_collections(self, callback: Between) -> None:
        """Run ``callback`` before every scrape and after every collection (quick; must not raise)."""
        self._between.append(callback)

    def _collected(self) -> None:
        for callback in self._between:
            callback()

    def scrape(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        self._collected()
        return generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        body = self.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def shutdown(self) -> None:
        self.provider.shutdown()
