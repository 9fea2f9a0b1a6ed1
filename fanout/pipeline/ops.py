"""Operational events, written to the ops topic in the simple event shape so that a team can route them
to its own webhook with an ordinary subscription.

Types: ``fanout.subscription.disabled``, ``fanout.subscription.failing`` (N consecutive failures) and
``fanout.delivery.dead_lettered``. Nothing is emitted about deliveries of events that came from the
ops topic itself, so there is no feedback loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson

from fanout.model.event import Delivery, iso_time
from fanout.model.ports import RecordSink

log = logging.getLogger("fanout.ops")

DISABLED = "fanout.subscription.disabled"
FAILING = "fanout.subscription.failing"
DEAD_LETTERED = "fanout.delivery.dead_lettered"


def ops_event(event_type: str, data: dict[str, Any]) -> bytes:
    """An operational event in the simple event shape."""
    body = {
        "event": event_type,
        "id": f"ops_{uuid.uuid4().hex}",
        "timestamp": iso_time(time.time()),
        "data": data,
    }
    return orjson.dumps(body)


class OpsEvents:
    def __init__(self, sink: RecordSink, topic: str) -> None:
        self._sink = sink
        self.topic = topic

    def emit(self, event_type: str, key: str, data: dict[str, Any]) -> None:
        future = self._sink.produce(self.topic, ops_event(event_type, data), key.encode(), [])
        future.add_done_callback(
            lambda f: (
                None
                if f.cancelled() or f.exception() is None
                else log.error("could not write operational event %s: %s", event_type, f.exception())
            )
        )

    def about(self, delivery: Delivery) -> bool:
        """False for deliveries of operational events (no events about events about events)."""
        return delivery.event.topic != self.topic

    def disabled(self, delivery_or_id: Delivery | str, reason: str) -> None:
        sub_id = delivery_or_id if isinstance(delivery_or_id, str) else delivery_or_id.subscription.id
        if isinstance(delivery_or_id, Delivery) and not self.about(delivery_or_id):
            return
        self.emit(DISABLED, sub_id, {"subscription": sub_id, "reason": reason})

    def failing(self, delivery: Delivery, consecutive: int) -> None:
        if not self.about(delivery):
            return
        sub = delivery.subscription
        self.emit(
            FAILING,
            sub.id,
            {
                "subscription": sub.id,
                "url": sub.url,
                "consecutive_failures": consecutive,
                "last_error": delivery.last_error,
            },
        )

    def dead_lettered(self, delivery: Delivery, reason: str) -> None:
        if not self.about(delivery):
            return
        self.emit(
            DEAD_LETTERED,
            delivery.subscription.id,
            {
                "subscription": delivery.subscription.id,
                "event_id": delivery.event.id,
                "event_type": delivery.event.type,
                "reason": reason,
                "attempts": delivery.attempt,
                "last_error": delivery.last_error,
            },
        )
