"""The ``extra`` of a log line about a delivery (the log formatters in ``fanout.telemetry.logs`` write
``subscription`` and ``event_id`` as they are, and turn ``traceparent`` into ``trace_id`` / ``span_id``).
Identifiers, reasons and statuses only: never secrets, request headers or payloads."""

from __future__ import annotations

from typing import Any

from fanout.model.event import Delivery


def delivery_fields(delivery: Delivery, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about ``delivery``."""
    return {
        "subscription": delivery.subscription.id,
        "event_id": delivery.event.id,
        "traceparent": delivery.traceparent or delivery.event.attributes.get("traceparent"),
        **more,
    }
