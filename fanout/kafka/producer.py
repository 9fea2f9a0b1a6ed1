"""An idempotent, acks=all producer whose ``produce`` returns an asyncio future (a ``RecordSink``).

librdkafka serves delivery reports from ``poll()``; a small thread polls and resolves the futures on
the event loop with one ``call_soon_threadsafe`` per poll. ``produce`` itself never blocks the loop: a
full local queue fails the future at once (callers try again later). The future resolves to the
record's ``RecordMetadata`` (topic, partition, offset), or fails with ``produce_error``'s class:
``RecordTooLarge`` / ``RecordRefused`` when this record will never be accepted, ``ProduceFailed``
(retriable) for everything else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fanout.config import LibrdkafkaConfig, Settings
from fanout.model.errors import FanoutError, FatalKafkaError, RecordRefused
from fanout.model.errors import ProduceFailed as ProduceFailed
from fanout.model.errors import RecordTooLarge as RecordTooLarge
from fanout.model.event import Headers
from fanout.model.ports import RecordMetadata

log = logging.getLogger("fanout.kafka.producer")


QUEUE_KBYTES = 64 * 1024


def producer_config(settings: Settings, **extra: Any) -> LibrdkafkaConfig:
    return {
        **settings.kafka.librdkafka(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": settings.kafka.message_max_bytes,
        "compression.type": "lz4",
        "queue.buffering.max.kbytes": QUEUE_KBYTES,  # bounded: a full queue fails the produce, callers retry
        **extra,
    }


# The codes after which the same record would be refused again, however often it is sent. librdkafka
# reports the broker's MESSAGE_TOO_LARGE and its own local size check with the same code
# (MSG_SIZE_TOO_LARGE); RECORD_LIST_TOO_LARGE is a batch larger than the topic's segment. Delivery
# reports carry no retriable flag (``KafkaError.retriable()`` is False for all of them), so the codes
# decide, and every code not named here counts as retriable: a wrongly final error would drop a
# record's value, a wrongly retriable one only holds its offset back.
TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
REFUSED_CODES = frozenset({KafkaError.INVALID_RECORD})


def produce_error(error: KafkaError) -> ProduceFailed:
    """The fanout error for a failed produce: final (``RecordRefused``, ``RecordTooLarge``) only for a
    refusal of this record; retriable (``ProduceFailed``) otherwise, including a fatal client error
    (the process stops and replays from its committed offsets, so nothing may be settled by it)."""
    if error.fatal():
        return ProduceFailed(error.str())
    if error.code() in TOO_LARGE_CODES:
        return RecordTooLarge(error.str())
    if error.code() in REFUSED_CODES:
        return RecordRefused(error.str())
    return ProduceFailed(error.str())


def _settle(
    future: asyncio.Future[RecordMetadata], error: KafkaError | None, where: RecordMetadata | None
) -> None:
    if future.done():
        return
    if error is None and where is not None:
        future.set_result(where)
    else:
        future.set_exception(
            produce_error(error) if error is not None else ProduceFailed("no delivery report")
        )


Report = tuple["asyncio.Future[RecordMetadata]", KafkaError | None, RecordMetadata | None]


def _settle_all(reports: list[Report]) -> None:
    for future, error, where in reports:
        _settle(future, error, where)


class AsyncProducer:
    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        on_fatal: Callable[[FatalKafkaError], None] | None = None,
        extra: LibrdkafkaConfig | None = None,
    ) -> None:
        self._loop = loop
        self._on_fatal = on_fatal
        self._producer = Producer(producer_config(settings, error_cb=self._on_error, **(extra or {})))
        self._running = True
        self._reports: deque[Report] = deque()
        self._thread = threading.Thread(target=self._poll, name="fanout-producer", daemon=True)
        self._thread.start()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.critical("fatal producer error: %s", error.str())
            if self._on_fatal is not None:
                fatal = FatalKafkaError(f"producer: {error.str()}")
                self._loop.call_soon_threadsafe(self._on_fatal, fatal)
        else:
            log.warning("producer: %s", error.str())

    def _poll(self) -> None:
        while self._running:
            self._producer.poll(0.1)
            self._hand_reports()
        self._hand_reports()  # the reports served by a final flush()

    def _hand_reports(self) -> None:
        """Settle the futures of the delivery reports served so far, in one call on the loop (a call per
        report woke the loop once per record). Only this thread takes from the queue; a report added
        meanwhile (by ``flush()`` in another thread) waits for the next round."""
        reports = self._reports
        if not reports:
            return
        batch = []
        while reports:
            batch.append(reports.popleft())
        self._loop.call_soon_threadsafe(_settle_all, batch)

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = self._loop.create_future()
        reports = self._reports

        def delivered(error: KafkaError | None, msg: Message) -> None:
            where = None
            if error is None:
                where = RecordMetadata(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
            reports.append((future, error, where))

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=cast(Any, headers), on_delivery=delivered
            )
        except KafkaException as exc:
            future.set_exception(produce_error(exc.args[0]))
        except BufferError as exc:
            future.set_exception(ProduceFailed(str(exc)))
        return future

    async def flush(self, seconds: float = 30.0) -> int:
        """Wait for outstanding records; returns how many are still unacknowledged."""
        return await self._loop.run_in_executor(None, self._producer.flush, seconds)

    async def close(self, seconds: float = 30.0) -> None:
        remaining = await self.flush(seconds)
        if remaining:
            log.error("%d records were not acknowledged before shutdown", remaining)
        self._running = False
        await self._loop.run_in_executor(None, self._thread.join)


class BlockingProducer:
    """For the CLI: ``produce`` waits for the broker's acknowledgement; ``send`` writes without waiting
    (``close`` flushes)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings))

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> RecordMetadata:
        result: list[RecordMetadata | KafkaError] = []

        def delivered(error: KafkaError | None, msg: Message) -> None:
            result.append(
                error if error is not None else RecordMetadata(topic, msg.partition() or 0, msg.offset() or 0)
            )

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=cast(Any, headers), on_delivery=delivered
            )
        except KafkaException as exc:
            raise produce_error(exc.args[0]) from None
        self._producer.flush(60)
        if not result:
            raise ProduceFailed("the broker did not acknowledge the record in time")
        if isinstance(result[0], KafkaError):
            raise produce_error(result[0])
        return result[0]

    def send(self, topic: str, value: bytes, key: bytes | None) -> None:
        self._producer.produce(topic, value=value, key=key)
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(30)


def produce_waiting(producer: Producer, topic: str, **record: Any) -> None:
    """``producer.produce`` for blocking writers: while the local queue is full, serve delivery reports
    and try again (instead of failing the write)."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.1)


class AckedWriter:
    """For blocking bulk writers (replays): ``write`` waits only while the local queue is full (serving
    delivery reports meanwhile); ``serve`` serves the reports that arrived; ``acked`` counts the
    acknowledged records; ``finish`` waits up to ``timeout`` for every acknowledgement and raises
    ``FanoutError`` when one is missing or failed."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(producer_config(settings))
        self.acked = 0
        self._failures: list[str] = []

    def _delivered(self, error: KafkaError | None, _msg: Message) -> None:
        if error is None:
            self.acked += 1
        else:
            self._failures.append(error.str())

    def write(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        produce_waiting(
            self._producer,
            topic,
            value=value,
            key=key,
            headers=cast(Any, headers),
            on_delivery=self._delivered,
        )

    def serve(self) -> None:
        self._producer.poll(0)

    def finish(self, timeout: float = 60.0) -> None:
        if self._producer.flush(timeout) or self._failures:
            raise FanoutError(f"the broker did not acknowledge every record: {self._failures[:1]}")
