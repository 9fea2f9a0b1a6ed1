"""Unit tests of the telemetry pieces: label cap, trace context, log formats, tracing switch, the
instrumented attempt, statistics digest."""

from __future__ import annotations

import logging
import sys

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import use_span

from fanout.kafka.consumer_stats import digest_stats
from fanout.kafka.publisher import event_body
from fanout.kafka.send_span import inject_trace_headers
from fanout.model.errors import PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.log_fields import delivery_fields
from fanout.pipeline.counts import reason_kind
from fanout.telemetry.attempts import AttemptMetrics, instrument_send, redacted_url, result_of
from fanout.telemetry.logs import JsonFormatter, TextFormatter
from fanout.telemetry.metrics import OTHER, LabelCap, Metrics
from fanout.telemetry.tracing import format_traceparent, parse_traceparent, setup_tracing
from tests.unit.factories import SECRET, make_delivery, make_event

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_label_cap_keeps_the_first_values_and_reports_the_rest_as_other() -> None:
    cap = LabelCap(2)
    assert [cap("a"), cap("b"), cap("c"), cap("a"), cap("d")] == ["a", "b", OTHER, "a", OTHER]


def test_traceparent_round_trip_and_rejects() -> None:
    context = parse_traceparent(TRACEPARENT, "vendor=x")
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert context.trace_state.get("vendor") == "x"
    assert format_traceparent(context) == TRACEPARENT
    for bad in (None, "", "00-abc", "ff-" + TRACEPARENT[3:], TRACEPARENT.replace("0af7", "zzzz")):
        assert parse_traceparent(bad) is None
    assert parse_traceparent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None


def log_record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "fanout.settle", logging.WARNING, __file__, 1, "dead-lettered %s", ("x",), None
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_delivery_fields_and_trace_ids() -> None:
    delivery = make_delivery(event=make_event(attributes={"traceparent": TRACEPARENT}))
    line = orjson.loads(
        JsonFormatter({"worker": 1}).format(log_record(**delivery_fields(delivery, reason="r")))
    )
    assert line["message"] == "dead-lettered x" and line["level"] == "WARNING" and line["worker"] == 1
    assert line["subscription"] == "hook-1" and line["event_id"] == "evt-0" and line["reason"] == "r"
    assert (line["trace_id"], line["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert "traceparent" not in line
    assert line["time"].endswith("Z")


def test_json_lines_take_the_current_span_and_format_exceptions() -> None:
    provider = TracerProvider()
    with use_span(provider.get_tracer("t").start_span("s"), end_on_exit=True) as span:
        try:
            raise ValueError("boom")
        except ValueError:
            record = log_record(exc_info=sys.exc_info())
        line = orjson.loads(JsonFormatter().format(record))
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "ValueError: boom" in line["exception"]


def test_text_lines_append_the_fields() -> None:
    text = TextFormatter({"worker": 0}).format(log_record(subscription="s1", traceparent=TRACEPARENT))
    assert "[worker 0] fanout.settle dead-lettered x" in text
    assert "subscription=s1" in text and "trace_id=0af7651916cd43dd8448eb211c80319c" in text


def test_delivery_fields_hold_no_secret() -> None:
    fields = delivery_fields(make_delivery())
    assert SECRET not in repr(fields) and set(fields) == {"subscription", "event_id", "traceparent"}


def test_url_redaction_drops_credentials_and_query_values() -> None:
    assert redacted_url("https://user:pw@hooks.example.com:8443/in?token=s3cret") == (
        "https://hooks.example.com:8443/in?REDACTED"
    )
    assert redacted_url("http://[::1]/x") == "http://[::1]/x"


def test_reason_kinds_are_bounded() -> None:
    assert reason_kind("retries exhausted") == "retries_exhausted"
    assert reason_kind("permanent failure: HTTP 400") == "permanent_failure"
    assert reason_kind("endpoint gone (HTTP 410): subscription disabled") == "endpoint_gone"
    assert reason_kind("subscription disabled") == "subscription_disabled"
    assert reason_kind("something new") == "other"


def test_result_of_failed_attempts() -> None:
    assert result_of(RetryableDelivery("HTTP 503", 503)) == "5xx"
    assert result_of(RetryableDelivery("timeout after 2s")) == "timeout"
    assert result_of(PermanentDelivery("http:// endpoints are refused")) == "error"


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(environ: dict[str, str], enabled: bool) -> None:
    tracing = setup_tracing(0.5, "fanout-test", environ=environ)
    assert tracing.enabled is enabled
    tracing.shutdown()


def scrape_value(metrics: Metrics, name: str) -> float:
    for line in metrics.scrape().decode().splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not scraped")


async def test_instrumented_attempt_records_duration_latency_and_the_attempt_span() -> None:
    metrics = Metrics("fanout-test", environ={})
    attempt_metrics = AttemptMetrics(metrics.histograms, LabelCap(10))
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(1.0, "fanout-test", processors=[SimpleSpanProcessor(exporter)])
    seen: list[str | None] = []

    async def send(delivery: Delivery) -> int:
        seen.append(delivery.traceparent)
        if delivery.event.offset == 1:
            raise RetryableDelivery("HTTP 503", 503)
        return 200

    for tracer in (None, tracing.tracer):
        attempt = instrument_send(send, attempt_metrics, tracer)
        assert await attempt(make_delivery(event=make_event(offset=0))) == 200
        with pytest.raises(RetryableDelivery):
            await attempt(make_delivery(event=make_event(offset=1)))
    duration = "fanout_delivery_attempt_duration_seconds_count"
    assert scrape_value(metrics, duration + '{result="2xx",subscription="hook-1"}') == 2
    assert scrape_value(metrics, duration + '{result="5xx",subscription="hook-1"}') == 2
    assert scrape_value(metrics, 'fanout_delivery_latency_seconds_count{subscription="hook-1"}') == 2
    assert seen[:2] == [None, None], "without a tracer the traceparent is left alone"
    ok, failed = exporter.get_finished_spans()
    assert seen[2] == format_traceparent(ok.context) and ok.attributes is not None
    assert ok.attributes["http.response.status_code"] == 200 and ok.attributes["fanout.delivery.attempt"] == 1
    assert failed.attributes is not None and failed.attributes["error.type"] == "503"
    metrics.shutdown()


def test_digest_of_client_statistics() -> None:
    stats = {
        "brokers": {
            "127.0.0.1:9092/bootstrap": {"state": "UP", "nodeid": -1},
            "127.0.0.1:9092/1": {"state": "UP", "nodeid": 1},
        },
        "cgrp": {"join_state": "steady"},
        "topics": {
            "orders": {
                "partitions": {
                    "0": {"consumer_lag": 7},
                    "1": {"consumer_lag": -1, "consumer_lag_stored": 3},
                    "2": {"consumer_lag": 9},
                    "-1": {"consumer_lag": -1},
                }
            }
        },
    }
    digest = digest_stats(orjson.dumps(stats).decode(), [("orders", 0), ("orders", 1)])
    assert digest.brokers_up and digest.join_state == "steady"
    assert digest.lag == {("orders", 0): 7, ("orders", 1): 3}
    stats["brokers"]["127.0.0.1:9092/1"]["state"] = "DOWN"  # type: ignore[index]
    assert not digest_stats(orjson.dumps(stats).decode(), []).brokers_up


def test_client_injects_the_trace_context_once() -> None:
    assert inject_trace_headers([]) == []
    provider = TracerProvider()
    with use_span(provider.get_tracer("t").start_span("s")) as span:
        headers = inject_trace_headers([("a", b"1")])
        context = span.get_span_context()
    assert headers == [("a", b"1"), ("traceparent", format_traceparent(context).encode())]
    assert inject_trace_headers([("traceparent", b"x")]) == [("traceparent", b"x")]
    body = orjson.loads(event_body("user.created", {"id": 1}, "evt_1", 1_700_000_000))
    assert body == {
        "event": "user.created",
        "id": "evt_1",
        "timestamp": "2023-11-14T22:13:20.000Z",
        "data": {"id": 1},
    }


def test_local_histograms_reach_the_otlp_reader_too() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.sdk.resources import Resource

    from fanout.telemetry.histograms import LocalHistograms
    from fanout.telemetry.metrics import _OtlpReader

    exported: list[MetricsData] = []

    class Capture(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
        ) -> MetricExportResult:
            exported.append(metrics_data)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
            pass

    histograms = LocalHistograms()
    histograms.create("fanout.delivery.latency", "s", "d", (1.0, 10.0)).cell({"subscription": "s"}).record(
        2.0
    )
    reader = _OtlpReader(Capture(), histograms.metrics, Resource({}))
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    provider.force_flush()
    names = {m.name for d in exported for r in d.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert {"c", "fanout.delivery.latency"} <= names
    (point,) = next(
        m.data.data_points
        for d in exported
        for r in d.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == "fanout.delivery.latency"
    )
    assert (point.count, point.sum, list(point.bucket_counts)) == (1, 2.0, [0, 1, 0])
    provider.shutdown()
