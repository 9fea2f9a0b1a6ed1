"""Value objects on the data path: Event (a decoded record), Delivery (one event for one subscription).

They are plain slotted classes rather than pydantic models: one of each is made per record or delivery
on the hot path. Validation happens where input enters (decode, subscription parsing), not here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from fanout.model.attempt import AttemptResult
    from fanout.model.subscription import Subscription

Headers = list[tuple[str, bytes | None]]


class Settlement(Protocol):
    """What a delivery reports to when it is settled (see ``pipeline.offsets.Ticket``): ``add(n)`` more
    pending shares (each released once), ``release()`` one."""

    def add(self, n: int) -> None: ...

    def release(self) -> None: ...

    @property
    def fenced(self) -> bool: ...


@dataclass(slots=True, eq=False)
class Event:
    """A source record decoded for routing and delivery.

    ``attributes`` holds what attribute filters match on: CloudEvents attributes (``source``,
    ``subject``, extensions) and the record's Kafka headers decoded as UTF-8. ``data`` is the parsed
    payload, or ``None`` when the record carried it in binary mode and nobody needed it yet
    (``payload()`` parses ``value`` lazily then). ``source_timestamp_ms`` is the source record's Kafka
    timestamp (None when the broker gave none), which the delivery history reports.
    """

    id: str
    type: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    time: float
    value: bytes
    headers: Headers
    attributes: dict[str, str]
    data: Any = None
    data_parsed: bool = False
    content_type: str = "application/json"
    source_timestamp_ms: int | None = None
    _payloads: dict[str, bytes] = field(default_factory=dict)

    def payload(self, mode: str) -> bytes:
        """The request body for payload ``mode``, serialised once per event and mode."""
        body = self._payloads.get(mode)
        if body is None:
            body = self.value if mode == "raw" else self._envelope()
            self._payloads[mode] = body
        return body

    def parsed_data(self) -> Any:
        """``data``, parsed from ``value`` on first use (JSON; text when it is not JSON)."""
        if not self.data_parsed:
            try:
                self.data = orjson.loads(self.value) if self.value else None
            except orjson.JSONDecodeError:
                self.data = self.value.decode("utf-8", "replace")
            self.data_parsed = True
        return self.data

    def _envelope(self) -> bytes:
        return orjson.dumps(
            {"id": self.id, "type": self.type, "timestamp": iso_time(self.time), "data": self.parsed_data()}
        )


_last_second: tuple[float, str] = (math.nan, "")  # (whole seconds, "YYYY-MM-DDTHH:MM:SS") of the last call


def iso_time(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC with milliseconds (``2026-11-30T01:02:03.456Z``): datetime's own
    rendering (microseconds rounded half to even, then cut to milliseconds), with the part up to the
    second kept from the previous call, since events come in time order (one call per event)."""
    global _last_second
    frac, whole = math.modf(epoch)
    micros = round(frac * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second, prefix = _last_second
    if whole != second:
        prefix = datetime.fromtimestamp(whole, UTC).isoformat()[:-6]  # cut "+00:00"
        _last_second = (whole, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


@dataclass(slots=True, eq=False)
class Delivery:
    """One event on its way to one subscription.

    ``attempt`` counts the HTTP attempts already made (0 for a fresh delivery; spills do not count).
    ``first_attempt`` is when the first attempt was made (or the delivery was replayed), 0 until then:
    ``max_age`` counts from it, so time spent waiting on fanout's own pace is never charged. ``received``
    is when fanout first routed the delivery (``retry.max_pending`` bounds how long a delivery may wait
    for its first attempt). ``spilled`` is the reason of the spill the delivery is coming back from ("" for
    a fresh delivery or a retry after an attempt): a lane takes it back even when a new one would not fit.
    ``ticket.release()`` is called exactly once, when the delivery is settled (delivered, or handed to a
    retry or dead-letter topic and acknowledged by the broker). A ``fenced`` ticket belongs to a revoked
    partition: its work is dropped. ``traceparent`` is sent to the subscriber (the source record's, or
    the attempt span's when tracing is on); ``trace`` is the span the delivery's next span continues
    from (``fanout.telemetry.spans.TraceHandle``), None when tracing is off. ``body`` is the request
    body a subscription's ``transform`` made (None: the event's payload in the subscription's mode).
    ``result`` is what the sender saw of the latest attempt (``fanout.model.attempt.AttemptResult``):
    set for every request that went out, None when the latest attempt never reached the wire; the
    delivery history reports it.
    """

    event: Event
    subscription: Subscription
    attempt: int
    first_attempt: float
    ticket: Settlement
    last_error: str = ""
    traceparent: str | None = None
    queued_at: float = 0.0
    trace: object | None = None
    body: bytes | None = None
    received: float = 0.0
    spilled: str = ""
    result: AttemptResult | None = None

    @property
    def age(self) -> float:
        """Seconds since the first attempt (0 before it)."""
        return time.time() - self.first_attempt if self.first_attempt else 0.0

    @property
    def waited(self) -> float:
        """Seconds since fanout first routed the delivery."""
        since = self.received or self.first_attempt
        return time.time() - since if since else 0.0
