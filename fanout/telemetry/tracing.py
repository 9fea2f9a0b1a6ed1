"""Tracing setup and W3C trace-context helpers.

``setup_tracing`` decides once, at start, whether this process traces: only when an exporter is
configured by the standard variables (``OTEL_TRACES_EXPORTER=otlp|console``, or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` with no
``OTEL_TRACES_EXPORTER``), and not when ``OTEL_SDK_DISABLED=true``. Otherwise it returns a ``Tracing``
whose ``tracer`` is None, and callers skip span code entirely. OTLP goes over http/protobuf.
Sampling is parent-based: a record that carries a ``traceparent`` follows its producer's decision;
one without is sampled at ``telemetry.trace_sample_ratio``.

The provider is not installed globally: the dispatcher passes its tracer explicitly (tests run
several dispatchers in one process, each with its own exporter).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, TraceFlags, Tracer, TraceState

from fanout import __version__
from fanout.model.wire_syntax import format_traceparent as format_traceparent

log = logging.getLogger("fanout.telemetry")

SCOPE = "fanout"
# The SDK's batch defaults (2048 spans, every 5 s) drop spans at a few thousand deliveries per second
# (three spans each); these apply unless OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BSP_SCHEDULE_DELAY are set.
BSP_MAX_QUEUE_SIZE = 32768
BSP_SCHEDULE_DELAY_MS = 1000


@dataclass(frozen=True)
class Tracing:
    """The process's tracer, or None when tracing is off."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


TRACING_OFF = Tracing()


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        has_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        )
        names = "otlp" if has_endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning(
                    "OTLP protocol %s is not supported; exporting traces over http/protobuf", protocol
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def resource(service_name: str, attributes: Mapping[str, str] | None = None) -> Resource:
    """``service.name`` from ``OTEL_SERVICE_NAME`` (else ``service_name``), ``OTEL_RESOURCE_ATTRIBUTES``."""
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    return Resource.create({"service.name": name, "service.version": __version__, **(attributes or {})})


def setup_tracing(
    sample_ratio: float,
    service_name: str,
    processors: list[SpanProcessor] | None = None,
    environ: Mapping[str, str] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Tracing:
    """A ``Tracing`` for this process. ``processors`` (tests: a SimpleSpanProcessor over an in-memory
    exporter) replace the exporters the environment would configure."""
    if processors is None:
        environ = os.environ if environ is None else environ
        queue = None if "OTEL_BSP_MAX_QUEUE_SIZE" in environ else BSP_MAX_QUEUE_SIZE
        delay = None if "OTEL_BSP_SCHEDULE_DELAY" in environ else BSP_SCHEDULE_DELAY_MS
        processors = [
            BatchSpanProcessor(e, max_queue_size=queue, schedule_delay_millis=delay)
            for e in _exporters(environ)
        ]
    if not processors:
        return TRACING_OFF
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=resource(service_name, attributes),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return Tracing(provider.get_tracer(SCOPE, __version__), provider)


def parse_traceparent(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """A remote span context from W3C ``traceparent`` (version 00) text, or None if absent or invalid."""
    if not traceparent or len(traceparent) < 55:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)
