"""The PRODUCER span of a Kafka write and the trace-context headers it puts on the record.

One definition for every writer that traces its writes: the publish API (``POST /v1/events``), the
dispatcher's retry and dead-letter hand-offs (``fanout.telemetry.spans``) and the ``Publisher`` client.
The span is ``send <topic>`` (kind PRODUCER) with the OpenTelemetry messaging attributes of a Kafka
send, plus the caller's own (``attributes``); its parent is ``context`` (default: the current one).
The caller ends it (when the broker acknowledged the record, or at once).

It lives in ``fanout.kafka`` because it describes a Kafka send and the ``Publisher`` (here, beside the
producer it wraps) must trace without a hook; ``fanout.telemetry`` and ``fanout.api`` sit above this
layer and import it. It needs only the OpenTelemetry API: without a configured SDK the span is a
no-op.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from fanout.model.event import Headers
from fanout.model.wire_syntax import format_traceparent


def start_send_span(
    tracer: Tracer,
    topic: str,
    context: Context | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Span:
    """Start the PRODUCER span of a write to ``topic``; the caller ends it."""
    return tracer.start_span(
        f"send {topic}",
        context=context,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            **(attributes or {}),
        },
    )


def inject_trace_headers(headers: Headers, span: Span | None = None) -> Headers:
    """``headers`` plus ``traceparent``/``tracestate`` of ``span`` (default: the current span), unless
    there is no valid context or the headers already carry one."""
    if any(name == "traceparent" for name, _ in headers):
        return headers
    span_context = (span or trace.get_current_span()).get_span_context()
    if not span_context.is_valid:
        return headers
    added: Headers = [("traceparent", format_traceparent(span_context).encode())]
    if span_context.trace_state:
        added.append(("tracestate", span_context.trace_state.to_header().encode()))
    return headers + added
