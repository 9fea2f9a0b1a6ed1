"""The error tree. Every failure fanout handles is one of these, and the class decides what happens.

FanoutError
├── ConfigError            bad settings, routes file or CLI input: stop at start, exit code 2, field named
├── PoisonRecord           a source record that cannot become an Event (not JSON, no type, ...):
│                          dead-lettered with the reason, and its offset moves on
├── DeliveryError          one attempt to deliver to one subscriber failed
│   ├── RetryableDelivery  408/425/429/5xx/3xx, timeout, connection error: next retry tier, or the
│   │                      dead letters when the schedule or max_age runs out
│   │   └── NotAttempted   no connection slot in time (pool timeout): the endpoint was not contacted;
│   │                      spilled like a full lane, not an attempt, not a breaker failure
│   └── PermanentDelivery  other 4xx, refused URL (scheme, SSRF): dead letters at once
│       └── EndpointGone   410: the subscription is disabled, the delivery dead-lettered
├── ValidationFailed       a subscription (or other object) failed validation; names object and field
├── VersionConflict        compare-and-set on the subscriptions topic lost: the caller's version is stale
├── ProduceFailed          the broker did not acknowledge a record (broker down, timed out, not enough
│   │                      replicas, local queue full, ...): retriable, the writer tries again later
│   └── RecordRefused      the broker (or the producer) refuses this record and always will (invalid
│       │                  record, ...): final; a retry or dead-letter write becomes a dead letter
│       │                  without the value, and the offset moves on
│       └── RecordTooLarge over the producer's message.max.bytes or the topic's max.message.bytes
└── FatalKafkaError        the Kafka client reports a fatal error: stop the process, a restart replays
                           from the committed offsets
"""

from __future__ import annotations


class FanoutError(Exception):
    """Base of every error fanout raises on purpose."""


class ConfigError(FanoutError):
    """Invalid configuration: the process must not start. The message names the field."""


class PoisonRecord(FanoutError):
    """A record that cannot be decoded into an Event. ``reason`` goes into the dead-letter headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(FanoutError):
    """One failed delivery attempt. ``error`` is the short text stored as the last error."""

    def __init__(self, error: str, status: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class RetryableDelivery(DeliveryError):
    """Worth another attempt later; ``retry_after`` is the receiver's hint in seconds, if any."""

    def __init__(self, error: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(error, status)
        self.retry_after = retry_after


class NotAttempted(RetryableDelivery):
    """The attempt could not start for a reason of fanout's own (every connection slot stayed busy for
    ``delivery.pool_timeout``): the endpoint was not contacted, so this says nothing about it. Lanes
    spill it like a full lane; it is not an attempt and not a breaker failure."""


class PermanentDelivery(DeliveryError):
    """Another attempt would fail the same way."""


class EndpointGone(PermanentDelivery):
    """The receiver answered 410 Gone: disable the subscription."""


class ValidationFailed(FanoutError):
    """An object failed validation. ``where`` names the object and field, e.g. ``orders-hook.url``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class VersionConflict(FanoutError):
    """A compare-and-set write lost: the expected version is not the current one."""

    def __init__(self, key: str, expected: int | None, current: int | None) -> None:
        super().__init__(f"{key}: expected version {expected}, current is {current}")
        self.key = key
        self.expected = expected
        self.current = current


class ProduceFailed(FanoutError):
    """The broker did not acknowledge a record (after the Kafka client's own retries). Retriable: the
    same record may be accepted later."""


class RecordRefused(ProduceFailed):
    """This record is refused and would be refused again, however often it is sent: final."""


class RecordTooLarge(RecordRefused):
    """The record exceeds the producer's ``message.max.bytes`` or the topic's ``max.message.bytes``."""


class FatalKafkaError(FanoutError):
    """The Kafka client hit an error it cannot recover from; the process must stop."""
