"""Small builders shared by the unit tests: valid subscriptions, events and deliveries."""

from __future__ import annotations

import base64
import time
from typing import Any

from fanout.model.event import Delivery, Event, Headers
from fanout.model.subscription import Subscription, parse_subscription
from fanout.pipeline.offsets import PartitionTracker, Ticket

KEY = b"k" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_KEY = b"o" * 24
OTHER_SECRET = "whsec_" + base64.b64encode(OTHER_KEY).decode()


def sub_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "hook-1",
        "url": "https://hooks.example.com/in",
        "topics": ["orders"],
        "secrets": [SECRET],
    }
    data.update(overrides)
    return data


def make_sub(**overrides: Any) -> Subscription:
    return parse_subscription(sub_data(**overrides))


def make_event(
    type: str = "order.created",
    topic: str = "orders",
    attributes: dict[str, str] | None = None,
    offset: int = 0,
    value: bytes = b'{"event":"order.created","data":{}}',
    headers: Headers | None = None,
    time_: float = 1_700_000_000.0,
) -> Event:
    return Event(
        id=f"evt-{offset}",
        type=type,
        topic=topic,
        partition=0,
        offset=offset,
        key=b"k",
        time=time_,
        value=value,
        headers=headers or [],
        attributes=attributes or {},
    )


def make_delivery(
    sub: Subscription | None = None,
    event: Event | None = None,
    ticket: Ticket | None = None,
    attempt: int = 0,
    first_attempt: float | None = None,
) -> Delivery:
    event = event or make_event()
    if ticket is None:
        ticket = PartitionTracker(event.topic, event.partition, epoch=1).track(event.offset)
    return Delivery(
        event=event,
        subscription=sub or make_sub(),
        attempt=attempt,
        first_attempt=time.time() if first_attempt is None else first_attempt,
        ticket=ticket,
    )
