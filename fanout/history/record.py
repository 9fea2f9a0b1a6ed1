"""The attempt record: one per HTTP attempt, and one per outcome that involves no attempt.

A record of the attempts topic (``<prefix>.attempts``, key = event id) as the dispatcher writes it and
the index reads it; ``fanout.history.codec`` turns it into JSON and back, and
``schemas/attempt.schema.json`` describes that JSON. What a record never holds: secrets, request
headers, the request body (the opt-in ``payload`` is the event's source value, truncated).

Outcomes (``Outcome``):

==================  ==========================================================================
``delivered``       an attempt answered 2xx
``retry_scheduled`` an attempt failed and the delivery went to retry tier ``tier``, due at
                    ``not_before_ms`` (no ``retry``: a key-ordered lane retries in place)
``spilled``         no attempt: the lane could not take the delivery now (breaker open, queue
                    full, paced), parked in tier ``tier`` until ``not_before_ms``
``dead_lettered``   written to the dead-letter topic with ``reason``; after an attempt (its last
                    one failed for good) or without one (max age reached while spilled)
``dropped``         no attempt: the subscription was deleted while the delivery was pending
``disabled``        no attempt: the event matched a disabled subscription (it is dead-lettered
                    with reason ``subscription disabled``)
==================  ==========================================================================

``attempt`` counts the HTTP attempts made for this delivery including this record's (so an
attempt-less record repeats the count so far). ``request`` is present exactly when this record reports
an HTTP attempt. A *failure* is every outcome but ``delivered`` and ``spilled``: what
``history.record: failures`` keeps, and what ``outcome=failed`` selects.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from fanout.model.attempt import Outcome as Outcome  # defined with the values the pipeline reports

SCHEMA_VERSION = 1

# Bounds the encoder truncates to and the decoder enforces (characters, like JSON Schema's maxLength).
MAX_ID = 256
MAX_TYPE = 256
MAX_SUBSCRIPTION = 128
MAX_REASON = 500
MAX_ERROR_CLASS = 100
MAX_ERROR_MESSAGE = 1000
MAX_CONTENT_TYPE = 256
MAX_TOPIC = 249
MAX_MEMBER = 256
MAX_BODY_BYTES = 65_536  # the largest history.response_bytes / history.payload_bytes
MAX_BODY_CHARS = 4 * ((MAX_BODY_BYTES + 2) // 3)  # its base64 length
MIN_TIME_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z, the earliest event time decode accepts
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_INT64 = 2**63 - 1


OUTCOMES = tuple(Outcome)


@dataclass(frozen=True, slots=True)
class Body:
    """The first bytes of a body, stored so that any bytes survive JSON and SQLite unchanged: the text
    itself when those bytes are UTF-8 (a character the cut split is dropped), else their base64.
    ``size`` is the whole body's length in bytes; ``truncated`` says whether ``text`` holds less."""

    text: str
    encoding: Literal["utf-8", "base64"]
    size: int
    truncated: bool

    @classmethod
    def of(cls, data: bytes, limit: int, size: int | None = None) -> Body | None:
        """The first ``limit`` bytes of ``data`` (``size``: the whole body's length when ``data`` is
        already a prefix of it); None when ``limit`` is 0."""
        limit = min(limit, MAX_BODY_BYTES)
        if limit <= 0:
            return None
        total = len(data) if size is None else max(size, len(data))
        head = data[:limit]
        truncated = total > len(head)
        text = _utf8_prefix(head, allow_cut=truncated)
        if text is not None:
            return cls(text, "utf-8", total, truncated)
        return cls(base64.b64encode(head).decode("ascii"), "base64", total, truncated)

    def raw(self) -> bytes:
        """The stored bytes."""
        if self.encoding == "base64":
            return base64.b64decode(self.text)
        return self.text.encode("utf-8")


def _utf8_prefix(head: bytes, allow_cut: bool) -> str | None:
    """``head`` as text, forgiving (when it was cut) a multi-byte character split at its end."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if allow_cut and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8")
        return None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the event was read: source topic, partition, offset, and the source record's timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """The HTTP attempt this record reports (never its headers or body): the Standard Webhooks id and
    timestamp it was signed with, and the time from sending to the answer or the error."""

    webhook_id: str
    webhook_timestamp: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str | None = None
    body: Body | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed: the transport's error class (``ReadTimeout``, ``ConnectError``, ...;
    ``HTTPStatus`` for a non-2xx answer) and a short message."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Retry:
    tier: int
    not_before_ms: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One record of the attempts topic (see the module docstring). Times are epoch milliseconds."""

    event_id: str
    subscription: str
    outcome: Outcome
    time_ms: int
    attempt: int
    event_type: str = ""
    event_time_ms: int | None = None
    origin: Origin | None = None
    request: Request | None = None
    response: Response | None = None
    error: Failure | None = None
    retry: Retry | None = None
    reason: str | None = None
    trace_id: str | None = None
    member: str | None = None
    payload: Body | None = None

    @property
    def attempted(self) -> bool:
        return self.request is not None

    @property
    def failed(self) -> bool:
        return self.outcome.failed
