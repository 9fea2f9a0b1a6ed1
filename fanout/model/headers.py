"""The headers fanout adds to retry and dead-letter records (a wire contract: see schemas/).

A retry or dead-letter record keeps the source record's key, value and headers, and adds:

==========================  ===================================================================
``fanout-subscription``     subscription id (absent on a poison record's dead letter)
``fanout-group``            the consumer group that wrote it (``dispatcher.group_id``; for a replay, the
                            group of the process that replayed it): a retry record is consumed only by
                            that group; records without it (written by fanout 0.1) by any group
``fanout-attempt``          HTTP attempts made so far (spills do not count)
``fanout-not-before``       epoch milliseconds before which the record must not be delivered
``fanout-origin-topic``     source topic, partition and offset of the event, and its time (epoch ms:
                            the event's own time; for a poison record, the record's timestamp)
``fanout-origin-partition``
``fanout-origin-offset``
``fanout-origin-timestamp``
``fanout-first-attempt``    epoch ms of the first HTTP attempt (or of the replay); max_age counts from it.
                            Absent while the delivery has never been attempted (spilled only)
``fanout-received``         epoch ms when fanout first routed the delivery; retry.max_pending bounds how
                            long a delivery may wait for its first attempt
``fanout-event-id``         the event id (the ``webhook-id``), stable across retries and replays
``fanout-last-error``       last status (``HTTP 503``) or error (``timeout after 15s``), if any
``fanout-reason``           why it was dead-lettered or spilled (``retries exhausted``, ``circuit open``);
                            on a retry record, present only for a spill (not an attempt)
``fanout-status``           last HTTP status, if any
``fanout-value-dropped``    on a dead letter written without the value (reason ``record too large``):
                            the size in bytes of the value it dropped. Such a dead letter cannot be
                            replayed; its origin headers find the event in its source topic
``traceparent``             W3C trace context of the original event (kept from the source headers;
                            added from the dispatcher's span when the source had none and tracing is on)
``fanout-traceparent``      trace context of the span that wrote this record (tracing on): a retry's
                            spans continue from it and link to ``traceparent``
==========================  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from fanout.model.event import Headers

PREFIX = "fanout-"
SUBSCRIPTION = "fanout-subscription"
GROUP = "fanout-group"
ATTEMPT = "fanout-attempt"
NOT_BEFORE = "fanout-not-before"
ORIGIN_TOPIC = "fanout-origin-topic"
ORIGIN_PARTITION = "fanout-origin-partition"
ORIGIN_OFFSET = "fanout-origin-offset"
ORIGIN_TIMESTAMP = "fanout-origin-timestamp"
FIRST_ATTEMPT = "fanout-first-attempt"
RECEIVED = "fanout-received"
EVENT_ID = "fanout-event-id"
LAST_ERROR = "fanout-last-error"
REASON = "fanout-reason"
STATUS = "fanout-status"
VALUE_DROPPED = "fanout-value-dropped"
TRACEPARENT = "fanout-traceparent"


def original(headers: Headers | None) -> Headers:
    """The source record's own headers: everything but fanout's."""
    return [(k, v) for k, v in headers or () if not k.startswith(PREFIX)]


def as_dict(headers: Headers | None) -> dict[str, str]:
    return {
        k: v.decode("utf-8", "replace") for k, v in headers or () if k.startswith(PREFIX) and v is not None
    }


def split(headers: Headers | None) -> tuple[dict[str, str], Headers]:
    """One pass over a record's headers: fanout's (as ``as_dict`` decodes them) and the source record's
    own (as ``original`` keeps them)."""
    fields: dict[str, str] = {}
    own: Headers = []
    for key, value in headers or ():
        if key.startswith(PREFIX):
            if value is not None:
                fields[key] = value.decode("utf-8", "replace")
        else:
            own.append((key, value))
    return fields, own


def not_before_of(fields: dict[str, str]) -> int | None:
    """``not_before_ms`` from headers already decoded by ``as_dict`` or ``split``."""
    text = fields.get(NOT_BEFORE)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def not_before_ms(headers: Headers | None) -> int | None:
    """The not-before time of a retry record, read without decoding the other headers."""
    for key, value in headers or ():
        if key == NOT_BEFORE and value:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def for_group(headers: Headers | None, group: str) -> bool:
    """Is this retry record ``group``'s to consume? Yes when ``group`` wrote it, or when it names no
    group (written before records carried one). Reads no other header."""
    wanted = group.encode()
    for key, value in headers or ():
        if key == GROUP:
            return value == wanted
    return True


@dataclass(frozen=True, slots=True)
class RetryMeta:
    """What a retry record says about its delivery."""

    subscription: str
    group: str | None
    attempt: int
    first_attempt: float
    origin_topic: str
    origin_partition: int
    origin_offset: int
    origin_timestamp: float
    event_id: str
    last_error: str
    received: float = 0.0
    spilled: str = ""

    @classmethod
    def parse(cls, headers: Headers | None) -> RetryMeta:
        """Raise ValueError naming the header when one is missing or malformed."""
        return cls.of(as_dict(headers))

    @classmethod
    def of(cls, h: dict[str, str]) -> RetryMeta:
        """``parse`` for headers already decoded by ``as_dict`` or ``split``."""
        try:
            return cls(
                subscription=h[SUBSCRIPTION],
                group=h.get(GROUP),
                attempt=_int(h, ATTEMPT),
                first_attempt=_int(h, FIRST_ATTEMPT, "0") / 1000,
                origin_topic=h[ORIGIN_TOPIC],
                origin_partition=_int(h, ORIGIN_PARTITION),
                origin_offset=_int(h, ORIGIN_OFFSET),
                origin_timestamp=_int(h, ORIGIN_TIMESTAMP, "0") / 1000,
                event_id=h[EVENT_ID],
                last_error=h.get(LAST_ERROR, ""),
                received=_int(h, RECEIVED, "0") / 1000,
                spilled=h.get(REASON, ""),
            )
        except KeyError as exc:
            raise ValueError(f"retry record without header {exc.args[0]}") from None


# Epoch milliseconds up to year 9999 fit easily; anything longer is not a time fanout wrote.
_MAX_DIGITS = 18


def _int(h: dict[str, str], name: str, default: str | None = None) -> int:
    text = h[name] if default is None else h.get(name, default)
    digits = text.strip().removeprefix("-")
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS:
        raise ValueError(f"retry record with a malformed header {name}: {text[:40]!r}")
    return int(text)


def encode(values: dict[str, str | int | None]) -> Headers:
    encoded: Headers = [(k, str(v).encode()) for k, v in values.items() if v is not None and v != ""]
    return encoded


def for_replay(
    original_headers: Headers | None,
    subscription: str,
    group: str,
    event_id: str,
    origin: tuple[str, int, int, int | None],
    now_ms: int,
) -> Headers:
    """The headers of a replayed delivery (DESIGN.md, "Replays"): addressed to ``subscription`` and to
    the consumer group ``group`` (the replaying process's ``dispatcher.group_id``), due now, attempts
    reset and ``max_age`` counted from now, the same event id (webhook-id), the event's origin (topic,
    partition, offset, epoch-ms time) and the source record's own headers."""
    topic, partition, offset, timestamp = origin
    values: dict[str, str | int | None] = {
        SUBSCRIPTION: subscription,
        GROUP: group,
        ATTEMPT: 0,
        NOT_BEFORE: now_ms,
        FIRST_ATTEMPT: now_ms,
        EVENT_ID: event_id,
        ORIGIN_TOPIC: topic,
        ORIGIN_PARTITION: partition,
        ORIGIN_OFFSET: offset,
        ORIGIN_TIMESTAMP: timestamp,
    }
    return original(original_headers) + encode(values)


def replay_of_dead_letter(headers: Headers | None, group: str, now_ms: int) -> Headers | None:
    """The replay headers for a dead-letter record, addressed to ``group`` whatever group dead-lettered
    it, or None when it cannot be replayed (a poison record: no subscription, event id or origin; a dead
    letter written without its value)."""
    h = as_dict(headers)
    if VALUE_DROPPED in h:
        return None
    try:
        origin = (
            h[ORIGIN_TOPIC],
            _int(h, ORIGIN_PARTITION),
            _int(h, ORIGIN_OFFSET),
            _int(h, ORIGIN_TIMESTAMP) if ORIGIN_TIMESTAMP in h else None,
        )
        return for_replay(headers, h[SUBSCRIPTION], group, h[EVENT_ID], origin, now_ms)
    except (KeyError, ValueError):
        return None
