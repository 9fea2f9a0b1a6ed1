"""The protected OpenTelemetry SDK hook fanout.telemetry.metrics overrides is still there, as pinned in
pyproject.toml (opentelemetry-sdk, opentelemetry-exporter-prometheus): ``MetricReader.collect`` hands
each collection to ``_receive_metrics(metrics_data, timeout_millis, **kwargs)``. When an upgrade
changes it, this fails first, naming the pin to revisit."""

from __future__ import annotations

import inspect

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, MetricsData, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry

PIN = "see the opentelemetry-sdk pin in pyproject.toml"


def test_the_readers_define_the_hook_with_its_signature() -> None:
    for reader in (MetricReader, PrometheusMetricReader, PeriodicExportingMetricReader):
        hook = reader.__dict__.get("_receive_metrics")
        assert hook is not None, f"{reader.__name__}._receive_metrics is gone ({PIN})"
        params = list(inspect.signature(hook).parameters.values())
        assert [p.name for p in params[:3]] == ["self", "metrics_data", "timeout_millis"], PIN
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, PIN


def test_collect_hands_every_collection_to_the_hook() -> None:
    received: list[MetricsData] = []

    class Reader(PrometheusMetricReader):
        def _receive_metrics(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
        ) -> None:
            received.append(metrics_data)

    reader = Reader(registry=CollectorRegistry())
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    try:
        reader.collect()
    finally:
        provider.shutdown()
    assert received and received[0].resource_metrics, PIN
