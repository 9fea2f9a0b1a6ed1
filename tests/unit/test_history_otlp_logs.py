"""The attempt record as an OpenTelemetry log record (``fanout.history.otlp_logs``): trace context,
time, severity by outcome, body and attributes; nothing of the request beyond the record's fields."""

from __future__ import annotations

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter

from fanout.history.codec import checked, encode
from fanout.history.otlp_logs import AttemptLogs
from fanout.history.record import Outcome
from tests.history_records import T0, TRACE, make


@pytest.mark.parametrize(
    ("outcome", "severity"),
    [
        (Outcome.DELIVERED, "INFO"),
        (Outcome.SPILLED, "INFO"),
        (Outcome.RETRY_SCHEDULED, "WARN"),
        (Outcome.DEAD_LETTERED, "ERROR"),
        (Outcome.DROPPED, "ERROR"),
        (Outcome.DISABLED, "ERROR"),
    ],
)
def test_each_outcome_is_a_log_record_with_its_trace_and_fields(outcome: Outcome, severity: str) -> None:
    exporter = InMemoryLogRecordExporter()
    logs = AttemptLogs(exporter=exporter)
    logs.emit([checked(encode(make(outcome, "evt-9", "hook-4", T0, 2)))])
    logs.shutdown()
    (exported,) = exporter.get_finished_logs()
    record = exported.log_record
    assert f"{record.trace_id:032x}" == TRACE and record.span_id == 0
    assert record.timestamp == T0 * 1_000_000
    assert record.severity_text == severity
    assert record.body == f"{outcome} evt-9 -> hook-4"
    attrs = dict(record.attributes or {})
    assert attrs["fanout.event_id"] == "evt-9" and attrs["fanout.subscription"] == "hook-4"
    assert attrs["fanout.outcome"] == str(outcome) and attrs["fanout.attempt"] == 2
    assert attrs["messaging.destination.name"] == "orders" and attrs["messaging.kafka.offset"] == 42
    assert ("http.response.status_code" in attrs) == (outcome in (Outcome.DELIVERED, Outcome.RETRY_SCHEDULED))
    assert not any("secret" in k or "header" in k for k in attrs)


def test_a_record_without_a_trace_has_no_trace_context() -> None:
    exporter = InMemoryLogRecordExporter()
    logs = AttemptLogs(exporter=exporter)
    logs.emit([checked(encode(make(Outcome.DELIVERED, trace_id=None)))])
    logs.shutdown()
    (exported,) = exporter.get_finished_logs()
    assert not exported.log_record.trace_id
