"""``history.otlp_logs``: each attempt record the index takes in is also emitted as an OpenTelemetry log
record, with the attempt's trace context, to the OTLP/HTTP logs endpoint of the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/logs``).

A log record: timestamp = when the outcome was decided; trace id = the record's (span id unset);
severity INFO for delivered and spilled, WARN for a retry, ERROR for dead-lettered, dropped and
disabled; body ``<outcome> <event id> -> <subscription>``; attributes ``fanout.event_id``,
``fanout.event_type``, ``fanout.subscription``, ``fanout.outcome``, ``fanout.attempt``,
``http.response.status_code``, ``fanout.latency_ms``, ``error.type``, ``error.message``,
``fanout.reason``, ``fanout.retry.not_before_ms``, ``fanout.member``, ``messaging.destination.name``,
``messaging.destination.partition.id``, ``messaging.kafka.offset`` (those the record has).

Export is batched, in the SDK's thread, with its bounded queue (records beyond it are dropped and the
SDK logs so); the indexer never waits for the collector. Which records: see ``HistoryIndexer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from fanout.telemetry.tracing import resource

_SEVERITY = {
    "delivered": (SeverityNumber.INFO, "INFO"),
    "spilled": (SeverityNumber.INFO, "INFO"),
    "retry_scheduled": (SeverityNumber.WARN, "WARN"),
    "dead_lettered": (SeverityNumber.ERROR, "ERROR"),
    "dropped": (SeverityNumber.ERROR, "ERROR"),
    "disabled": (SeverityNumber.ERROR, "ERROR"),
}


def log_record(r: Mapping[str, Any]) -> LogRecord:
    """The log record of an attempt record (as ``fanout.history.codec.checked`` gives it)."""
    attrs: dict[str, Any] = {
        "fanout.event_id": r["event_id"],
        "fanout.event_type": r["event_type"],
        "fanout.subscription": r["subscription"],
        "fanout.outcome": r["outcome"],
        "fanout.attempt": r["attempt"],
    }
    request, response, error, retry, origin = r["request"], r["response"], r["error"], r["retry"], r["origin"]
    if request is not None:
        attrs["fanout.latency_ms"] = float(request["latency_ms"])
        attrs["fanout.webhook_id"] = request["webhook_id"]
    if response is not None:
        attrs["http.response.status_code"] = response["status"]
    if error is not None:
        attrs["error.type"] = error["class"]
        attrs["error.message"] = error["message"]
    if r["reason"] is not None:
        attrs["fanout.reason"] = r["reason"]
    if retry is not None:
        attrs["fanout.retry.tier"] = retry["tier"]
        attrs["fanout.retry.not_before_ms"] = retry["not_before_ms"]
    if r["member"] is not None:
        attrs["fanout.member"] = r["member"]
    if origin is not None:
        attrs["messaging.destination.name"] = origin["topic"]
        attrs["messaging.destination.partition.id"] = str(origin["partition"])
        attrs["messaging.kafka.offset"] = origin["offset"]
    number, text = _SEVERITY.get(r["outcome"], (SeverityNumber.INFO, "INFO"))
    trace = r["trace_id"]
    context = None
    if trace:
        span = SpanContext(int(trace, 16), 0, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        context = set_span_in_context(NonRecordingSpan(span), Context())
    return LogRecord(
        timestamp=r["time_ms"] * 1_000_000,
        context=context,
        severity_number=number,
        severity_text=text,
        body=f"{r['outcome']} {r['event_id']} -> {r['subscription']}",
        attributes=attrs,
        event_name="fanout.attempt",
    )


class AttemptLogs:
    """Emits attempt records as OpenTelemetry logs through ``exporter`` (the OTLP/HTTP one by default)."""

    def __init__(self, service_name: str = "fanout-api", exporter: LogRecordExporter | None = None) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

            exporter = OTLPLogExporter()
        self._provider = LoggerProvider(resource=resource(service_name))
        self._provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        self._logger = self._provider.get_logger("fanout.history")

    def emit(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            self._logger.emit(log_record(r))

    def shutdown(self) -> None:
        """Export what is queued (bounded by the SDK's export timeout) and stop."""
        self._provider.shutdown()
