"""The instrumented delivery attempt: ``instrument_send(send, metrics, tracer)`` wraps the HTTP sender.

Every attempt records ``fanout.delivery.attempt.duration`` (by subscription and result: ``2xx``,
``3xx``, ``4xx``, ``5xx``, ``timeout``, ``error``); a 2xx also records ``fanout.delivery.latency``, the
end-to-end time from the event's time to the response. With a tracer, the attempt is a ``POST`` span
(HTTP client conventions, plus ``fanout.subscription.id``, ``fanout.event.id`` and
``fanout.delivery.attempt``) whose context becomes the ``traceparent`` the subscriber receives; an
attempt of a delivery taken from a retry tier links to the original trace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from fanout.errors import DeliveryError
from fanout.model import Delivery
from fanout.telemetry.metrics import LabelCap
from fanout.telemetry.spans import TraceHandle
from fanout.telemetry.tracing import format_traceparent

Send = Callable[[Delivery], Awaitable[object]]
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)


def result_of(error: DeliveryError) -> str:
    if error.status is not None:
        return f"{error.status // 100}xx"
    return "timeout" if error.error.startswith("timeout") else "error"


class AttemptMetrics:
    """The two per-attempt histograms, with one attribute dict per (subscription, result), built once."""

    def __init__(self, meter: Meter, cap: LabelCap) -> None:
        self.duration: Histogram = meter.create_histogram(
            "fanout.delivery.attempt.duration",
            unit="s",
            description="Duration of HTTP delivery attempts, by subscription and result",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.latency: Histogram = meter.create_histogram(
            "fanout.delivery.latency",
            unit="s",
            description="End-to-end latency from the event's time to the subscriber's 2xx, by subscription",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self._cap = cap
        self._attributes: dict[str, dict[str, dict[str, str]]] = {}

    def attributes(self, sub_id: str, result: str) -> dict[str, str]:
        by_result = self._attributes.get(sub_id)
        if by_result is None:
            by_result = self._attributes[sub_id] = {}
        attributes = by_result.get(result)
        if attributes is None:
            attributes = by_result[result] = {"subscription": self._cap(sub_id)}
            if result:
                attributes["result"] = result
        return attributes


def redacted_url(url: str) -> str:
    """``url.full`` without credentials or query values (they may hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?REDACTED" if parts.query else "")


def instrument_send(send: Send, metrics: AttemptMetrics, tracer: Tracer | None) -> Send:
    if tracer is None:
        return _measured(send, metrics)
    return _traced(send, metrics, tracer)


def _measured(send: Send, metrics: AttemptMetrics) -> Send:
    duration, latency, attributes = metrics.duration, metrics.latency, metrics.attributes

    async def attempt(delivery: Delivery) -> object:
        sub_id = delivery.subscription.id
        started = time.monotonic()
        try:
            status = await send(delivery)
        except DeliveryError as exc:
            duration.record(time.monotonic() - started, attributes(sub_id, result_of(exc)))
            raise
        duration.record(time.monotonic() - started, attributes(sub_id, "2xx"))
        latency.record(max(0.0, time.time() - delivery.event.time), attributes(sub_id, ""))
        return status

    return attempt


def _traced(send: Send, metrics: AttemptMetrics, tracer: Tracer) -> Send:
    duration, latency, attributes = metrics.duration, metrics.latency, metrics.attributes
    urls: dict[str, tuple[str, str, int]] = {}

    def url_attributes(url: str) -> tuple[str, str, int]:
        found = urls.get(url)
        if found is None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            found = urls[url] = (redacted_url(url), parts.hostname or "", port)
        return found

    async def attempt(delivery: Delivery) -> object:
        sub = delivery.subscription
        parent = delivery.trace
        handle = parent if isinstance(parent, TraceHandle) else None
        full, host, port = url_attributes(sub.url)
        span = tracer.start_span(
            "POST",
            context=handle.context if handle is not None else Context(),
            kind=SpanKind.CLIENT,
            links=(handle.link,) if handle is not None and handle.link is not None else None,
            attributes={
                "http.request.method": "POST",
                "url.full": full,
                "server.address": host,
                "server.port": port,
                "fanout.subscription.id": sub.id,
                "fanout.event.id": delivery.event.id,
                "fanout.delivery.attempt": delivery.attempt + 1,
            },
        )
        delivery.traceparent = format_traceparent(span.get_span_context())
        delivery.trace = TraceHandle(span)
        started = time.monotonic()
        try:
            status = await send(delivery)
        except DeliveryError as exc:
            duration.record(time.monotonic() - started, attributes(sub.id, result_of(exc)))
            if exc.status is not None:
                span.set_attribute("http.response.status_code", exc.status)
            span.set_attribute(
                "error.type", str(exc.status) if exc.status is not None else type(exc).__name__
            )
            span.set_status(Status(StatusCode.ERROR, exc.error))
            span.end()
            raise
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        span.end()
        duration.record(time.monotonic() - started, attributes(sub.id, "2xx"))
        latency.record(max(0.0, time.time() - delivery.event.time), attributes(sub.id, ""))
        return status

    return attempt
