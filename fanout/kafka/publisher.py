"""Publish events to Kafka from a Python service, with the W3C trace context in the record headers.

    from fanout.kafka.publisher import Publisher

    publisher = Publisher("kafka:9092")
    publisher.publish("users", "user_registered", {"user_id": 1234}, key="1234")
    publisher.flush()

Each record is the simple event shape ``{"event", "id", "timestamp", "data"}``. ``publish`` starts a
``send <topic>`` PRODUCER span (OpenTelemetry messaging conventions) as a child of the current span,
and writes its context as ``traceparent`` (and ``tracestate``) headers, so fanout's dispatcher and
the subscriber continue the same trace. Without a configured OpenTelemetry SDK the span is a no-op
and the current context (if any) is propagated unchanged. The span and the headers are
``fanout.kafka.send_span``'s, shared with the HTTP API's publish and the dispatcher's hand-offs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, cast

import orjson
from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from fanout import __version__
from fanout.kafka.send_span import inject_trace_headers, start_send_span
from fanout.model.event import Headers, iso_time

SCOPE = "fanout.client"


def event_body(event_type: str, data: Any, event_id: str, timestamp: float) -> bytes:
    return orjson.dumps({"event": event_type, "id": event_id, "timestamp": iso_time(timestamp), "data": data})


class Publisher:
    """A thin, thread-safe wrapper over an idempotent ``confluent_kafka.Producer`` (acks=all).

    ``config`` adds or overrides librdkafka settings (security, ``linger.ms``...);
    ``tracer_provider`` defaults to the global one."""

    def __init__(
        self,
        bootstrap_servers: str,
        config: Mapping[str, Any] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                **(config or {}),
            }
        )
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._errors: list[str] = []

    def publish(
        self,
        topic: str,
        event_type: str,
        data: Any = None,
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
        timestamp: float | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> str:
        """Queue one event (delivery is asynchronous: ``flush`` waits); returns its id."""
        event_id = event_id or f"evt_{uuid.uuid4().hex}"
        body = event_body(event_type, data, event_id, time.time() if timestamp is None else timestamp)
        record_headers: Headers = [
            (name, value.encode() if isinstance(value, str) else value)
            for name, value in (headers or {}).items()
        ]
        span = start_send_span(
            self._tracer,
            topic,
            attributes={"messaging.message.id": event_id, "fanout.event.type": event_type},
        )
        try:
            record_headers = inject_trace_headers(
                record_headers, span if span.get_span_context().is_valid else None
            )
            self._producer.produce(
                topic,
                value=body,
                key=key.encode() if isinstance(key, str) else key,
                headers=cast(Any, record_headers),
                on_delivery=self._delivered,
            )
            self._producer.poll(0)
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
        finally:
            span.end()
        return event_id

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._errors.append(str(error))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued event is acknowledged; raise if any could not be written."""
        remaining = self._producer.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise RuntimeError(f"{remaining} events unacknowledged, {len(errors)} failed: {errors[:3]}")

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
