"""The instrumented delivery attempt: ``instrument_send(send, metrics, tracer)`` wraps the HTTP sender.

Every attempt records ``fanout.delivery.attempt.duration`` (by subscription and result: ``2xx``,
``3xx``, ``4xx``, ``5xx``, ``timeout``, ``error``; a ``NotAttempted`` pool timeout is no attempt and
records nothing); a 2xx also records ``fanout.delivery.latency``, the
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
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from fanout.model.errors import DeliveryError, NotAttempted
from fanout.model.event import Delivery
from fanout.telemetry.histograms import HistogramCell, LocalHistograms
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
    """The two per-attempt histograms, with one cell per (subscription, result), resolved once."""

    def __init__(self, histograms: LocalHistograms, cap: LabelCap) -> None:
        self.duration = histograms.create(
            "fanout.delivery.attempt.duration",
            "s",
            "Duration of HTTP delivery attempts, by subscription and result",
            DURATION_BUCKETS,
        )
        self.latency = histograms.create(
            "fanout.delivery.latency",
            "s",
            "End-to-end latency from the event's time to the subscriber's 2xx, by subscription",
            LATENCY_BUCKETS,
        )
        self._cap = cap
        self._cells: dict[str, dict[str, HistogramCell]] = {}
        self._succeeded: dict[str, tuple[HistogramCell, HistogramCell]] = {}

    def succeeded(self, sub_id: str) -> tuple[HistogramCell, HistogramCell]:
        """The subscription's (``2xx`` attempt-duration, latency) cells: one lookup per delivered attempt."""
        pair = self._succeeded.get(sub_id)
        if pair is None:
            pair = self._succeeded[sub_id] = (self.cell(sub_id, "2xx"), self.cell(sub_id, ""))
        return pair

    def cell(self, sub_id: str, result: str) -> HistogramCell:
        """``result`` "" is the subscription's latency cell; otherwise its attempt-duration cell."""
        by_result = self._cells.get(sub_id)
        if by_result is None:
            by_result = self._cells[sub_id] = {}
        cell = by_result.get(result)
        if cell is None:
            label = self._cap(sub_id)
            if result:
                cell = self.duration.cell({"subscription": label, "result": result})
            else:
                cell = self.latency.cell({"subscription": label})
            by_result[result] = cell
        return cell


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
    cell, succeeded = metrics.cell, metrics.succeeded

    async def attempt(delivery: Delivery) -> object:
        sub_id = delivery.subscription.id
        started = time.monotonic()
        try:
            status = await send(delivery)
        except NotAttempted:
            raise
        except DeliveryError as exc:
            cell(sub_id, result_of(exc)).record(time.monotonic() - started)
            raise
        duration, latency = succeeded(sub_id)
        duration.record(time.monotonic() - started)
        latency.record(max(0.0, time.time() - delivery.event.time))
        return status

    return attempt


def _traced(send: Send, metrics: AttemptMetrics, tracer: Tracer) -> Send:
    cell, succeeded = metrics.cell, metrics.succeeded
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
            if not isinstance(exc, NotAttempted):
                cell(sub.id, result_of(exc)).record(time.monotonic() - started)
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
        duration, latency = succeeded(sub.id)
        duration.record(time.monotonic() - started)
        latency.record(max(0.0, time.time() - delivery.event.time))
        return status

    return attempt
