"""Metrics through the OpenTelemetry metrics API, exposed in Prometheus format (``Metrics.handler``, an
aiohttp handler for ``GET /metrics``) and, when ``OTEL_METRICS_EXPORTER=otlp``, pushed over OTLP
(http/protobuf, every ``OTEL_METRIC_EXPORT_INTERVAL`` ms).

Each ``Metrics`` has its own provider and Prometheus registry, so several can live in one process
(tests). The API server mounts the same handler: ``app.router.add_get("/metrics", metrics.handler)``.

Instrument names become Prometheus names by the exporter's rules: ``fanout.deliveries`` (a counter)
is scraped as ``fanout_deliveries_total``, a histogram ``fanout.delivery.latency`` with unit ``s`` as
``fanout_delivery_latency_seconds_{bucket,sum,count}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fanout import __version__
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


def _otlp_reader(environ: Mapping[str, str]) -> MetricReader | None:
    names = [n.strip().lower() for n in environ.get("OTEL_METRICS_EXPORTER", "none").split(",")]
    if "otlp" not in names or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return PeriodicExportingMetricReader(OTLPMetricExporter())


class Metrics:
    def __init__(
        self,
        service_name: str,
        environ: Mapping[str, str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        readers: list[MetricReader] = [
            PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
        ]
        otlp = _otlp_reader(os.environ if environ is None else environ)
        if otlp is not None:
            readers.append(otlp)
        self.provider = MeterProvider(metric_readers=readers, resource=resource(service_name, attributes))
        self.meter: Meter = self.provider.get_meter(SCOPE, __version__)

    def scrape(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        body = self.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def shutdown(self) -> None:
        self.provider.shutdown()
