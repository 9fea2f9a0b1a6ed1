"""A producer polled on the event loop, for records written by the thousand (attempt records) and the
dispatcher's other records (retry, dead-letter, ops: ``produce``, a ``RecordSink``).

``AsyncProducer`` serves delivery reports on a thread of its own; confluent-kafka takes the GIL for
every report it hands to Python, so at thousands of records a second that thread and the loop trade the
GIL for each record. ``LoopProducer`` has no thread: ``produce_then`` starts a timer on the loop that
calls ``poll(0)`` every ``interval`` seconds while records are outstanding, so each report's ``done``
runs on the loop, in line, without a future or a thread switch.

One producer for all of them: a retry record rides in the same produce request as the attempt records
written at the same time (a second producer cost its own requests, broker-thread wake-ups, and a
thread taking the GIL for each delivery report).

``produce`` returns a future resolved on the loop, like ``AsyncProducer.produce``. ``produce_then``:
``done(None)`` once the broker acknowledged the record (``acks=all``, idempotent), ``done(error)`` with
``produce_error``'s class when it failed; ``done`` may run before ``produce_then`` returns (a full local
queue, a refused record). ``close`` waits for the outstanding records (their reports are then dropped:
the process stops, and the offsets they held stay uncommitted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fanout.config import LibrdkafkaConfig, Settings
from fanout.kafka.producer import produce_error, producer_config
from fanout.model.errors import FatalKafkaError, ProduceFailed
from fanout.model.event import Headers
from fanout.model.ports import RecordMetadata

log = logging.getLogger("fanout.kafka.producer")

Done = Callable[[ProduceFailed | None], None]
POLL_INTERVAL = 0.005


class LoopProducer:
    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        on_fatal: Callable[[FatalKafkaError], None] | None = None,
        extra: LibrdkafkaConfig | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._loop = loop
        self._on_fatal = on_fatal
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._producer = Producer(producer_config(settings, error_cb=self._on_error, **(extra or {})))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.critical("fatal producer error: %s", error.str())
            if self._on_fatal is not None and not self._closing:
                self._on_fatal(FatalKafkaError(f"producer: {error.str()}"))
        else:
            log.warning("producer: %s", error.str())

    def produce_then(self, topic: str, value: bytes, key: bytes | None, done: Done) -> None:
        def delivered(error: KafkaError | None, _msg: Message) -> None:
            if not self._closing:
                done(None if error is None else produce_error(error))

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except KafkaException as exc:
            done(produce_error(exc.args[0]))
            return
        except BufferError as exc:
            done(ProduceFailed(str(exc)))
            return
        if self._timer is None:
            self._timer = self._loop.call_later(self._interval, self._poll)

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        """``RecordSink.produce``: the future resolves on the loop to where the record was written, or
        fails with ``produce_error``'s class (at once for a full local queue or a refused record)."""
        future: asyncio.Future[RecordMetadata] = self._loop.create_future()

        def delivered(error: KafkaError | None, msg: Message) -> None:
            if self._closing or future.done():
                return
            if error is None:
                future.set_result(RecordMetadata(topic, msg.partition() or 0, msg.offset() or 0))
            else:
                future.set_exception(produce_error(error))

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=cast(Any, headers), on_delivery=delivered
            )
        except KafkaException as exc:
            future.set_exception(produce_error(exc.args[0]))
            return future
        except BufferError as exc:
            future.set_exception(ProduceFailed(str(exc)))
            return future
        if self._timer is None:
            self._timer = self._loop.call_later(self._interval, self._poll)
        return future

    def _poll(self) -> None:
        self._timer = None
        if self._closing:
            return
        self._producer.poll(0)
        if len(self._producer):
            self._timer = self._loop.call_later(self._interval, self._poll)

    async def close(self, seconds: float = 30.0) -> None:
        """Wait up to ``seconds`` for the outstanding records; their reports are dropped."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        remaining: Any = await self._loop.run_in_executor(None, self._producer.flush, seconds)
        if remaining:
            log.error("%d records were not acknowledged before shutdown", remaining)
