"""Writing attempt records to a real attempts topic for the history tests (what the dispatcher's
``fanout.history.writer`` writes: the encoded record, keyed by its event id)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, Message, Producer

from fanout.config import Settings
from fanout.history.codec import encode
from fanout.history.record import AttemptRecord


def produce_records(settings: Settings, records: Iterable[AttemptRecord]) -> None:
    """Write ``records`` to ``settings.topics.attempts``; every one acknowledged, or the test fails."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "enable.idempotence": True})
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            errors.append(error)

    for r in records:
        producer.produce(
            settings.topics.attempts, value=encode(r), key=r.event_id.encode(), on_delivery=delivered
        )
    assert producer.flush(30) == 0
    assert not errors, errors
