"""The one PRODUCER span (``fanout.kafka.send_span``): its shape, and that the dispatcher's hand-off
span is that span (the publish API and the Publisher client call the same function)."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fanout.kafka.send_span import inject_trace_headers, start_send_span
from fanout.model.wire_syntax import format_traceparent
from fanout.telemetry.spans import DispatcherTracer
from fanout.telemetry.tracing import setup_tracing

BASE = {
    "messaging.system": "kafka",
    "messaging.operation.type": "send",
    "messaging.operation.name": "send",
}


def test_the_send_span_and_the_hand_off_span_are_one_shape() -> None:
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(1.0, "fanout-test", processors=[SimpleSpanProcessor(exporter)])
    assert tracing.tracer is not None
    span = start_send_span(tracing.tracer, "orders", attributes={"messaging.message.id": "evt-1"})
    headers = inject_trace_headers([("a", b"1")], span)
    span.end()
    assert headers == [("a", b"1"), ("traceparent", format_traceparent(span.get_span_context()).encode())]
    assert inject_trace_headers(headers, span) == headers, "a record's own traceparent is kept"
    handle, written = DispatcherTracer(tracing.tracer, "g").hand_off("fanout.retry.0", None, [])
    handle.end()
    sent, handed = exporter.get_finished_spans()
    for finished, topic in ((sent, "orders"), (handed, "fanout.retry.0")):
        assert (finished.name, finished.kind) == (f"send {topic}", SpanKind.PRODUCER)
        assert finished.attributes is not None
        assert {k: finished.attributes[k] for k in BASE} == BASE
        assert finished.attributes["messaging.destination.name"] == topic
    assert sent.attributes is not None and sent.attributes["messaging.message.id"] == "evt-1"
    assert written == [("fanout-traceparent", handle.traceparent.encode())]
    tracing.shutdown()
