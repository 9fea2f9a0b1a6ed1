"""The dispatcher's spans, after the OpenTelemetry messaging and HTTP client conventions.

- ``process <topic>`` (CONSUMER), one per record: a child of the producer's span (the record's
  ``traceparent``). For a record from a retry tier it is a child of the hand-off span that wrote the
  record (``fanout-traceparent``) and *links* to the original trace context (``traceparent``).
- ``POST`` (CLIENT), one per delivery attempt: a child of the process span; ``fanout.attempts`` makes it
  (see ``attempts``). Its context is the ``traceparent`` the subscriber receives.
- ``send <topic>`` (PRODUCER), one per retry or dead-letter write: a child of the attempt (or of the
  process span when there was no attempt: spills, disabled subscriptions, poison records); it ends
  when the broker acknowledged the record. Its context travels in the record's ``fanout-traceparent``
  header; when the source record had no ``traceparent``, one is added so retries stay in the trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)

from fanout.kafka.send_span import start_send_span
from fanout.model import headers as H
from fanout.model.event import Event, Headers
from fanout.telemetry.tracing import format_traceparent, parse_traceparent

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


class TraceHandle:
    """A span of a record or delivery, as the parent of the spans that follow it."""

    __slots__ = ("_context", "link", "span")

    def __init__(self, span: Span, link: Link | None = None) -> None:
        self.span = span
        self.link = link
        self._context: Context | None = None

    @property
    def context(self) -> Context:
        if self._context is None:
            self._context = set_span_in_context(self.span, Context())
        return self._context

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.span.get_span_context())

    def decoded(self, event: Event, matched: int) -> None:
        span = self.span
        if span.is_recording():
            span.set_attribute("messaging.message.id", event.id)
            span.set_attribute("fanout.event.type", event.type)
            span.set_attribute("fanout.subscriptions.matched", matched)

    def failed(self, reason: str) -> None:
        self.span.set_status(Status(StatusCode.ERROR, reason))

    def end(self) -> None:
        self.span.end()


def _context_of(traceparent: str | None, tracestate: str | None = None) -> Context:
    parent = parse_traceparent(traceparent, tracestate)
    if parent is None:
        return Context()
    return set_span_in_context(NonRecordingSpan(parent), Context())


class DispatcherTracer:
    def __init__(self, tracer: Tracer, group_id: str) -> None:
        self.tracer = tracer
        self.group_id = group_id

    def record(self, record: Any, retry: bool) -> TraceHandle:
        """Start the process span of a consumed record (a ``SourceRecord``); the caller ends it."""
        traceparent = tracestate = hand_off = None
        for key, value in record.headers() or ():
            if key == TRACEPARENT and value:
                traceparent = value.decode("ascii", "replace")
            elif key == TRACESTATE and value:
                tracestate = value.decode("ascii", "replace")
            elif key == H.TRACEPARENT and value:
                hand_off = value.decode("ascii", "replace")
        links: Sequence[Link] = ()
        if retry and hand_off is not None:
            context = _context_of(hand_off)
            original = parse_traceparent(traceparent, tracestate)
            if original is not None:
                links = (Link(original, {"fanout.link": "original"}),)
        else:
            context = _context_of(traceparent, tracestate)
        topic = record.topic() or ""
        span = self.tracer.start_span(
            f"process {topic}",
            context=context,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(record.partition() or 0),
                "messaging.kafka.offset": record.offset() or 0,
                "messaging.consumer.group.name": self.group_id,
                "messaging.message.body.size": len(record.value() or b""),
            },
        )
        return TraceHandle(span, links[0] if links else None)

    def hand_off(self, topic: str, parent: object, headers: Headers) -> tuple[TraceHandle, Headers]:
        """Start the span of a retry or dead-letter write; returns it and the headers to write."""
        context = parent.context if isinstance(parent, TraceHandle) else Context()
        handle = TraceHandle(start_send_span(self.tracer, topic, context))
        extra: Headers = [(H.TRACEPARENT, handle.traceparent.encode())]
        if isinstance(parent, TraceHandle) and not any(k == TRACEPARENT for k, _ in headers):
            extra.append((TRACEPARENT, parent.traceparent.encode()))
        return handle, headers + extra
