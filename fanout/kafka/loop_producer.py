"""A producer polled on the event loop, for records written by the thousand (attempt records).

``AsyncProducer`` serves delivery reports on a thread of its own; confluent-kafka takes the GIL for
every report it hands to Python, so at thousands of records a second that thread and the loop trade the
GIL for each record. ``LoopProducer`` has no thread: ``produce_then`` starts a timer on the loop that
calls ``poll(0)`` every ``interval`` seconds while records are outstanding, so each report's ``done``
runs on the loop, in line, without a future or a thread switch.

``done(None)`` once the broker acknowledged the record (``acks=all``, idempotent), ``done(error)`` with
``produce_error``'s class when it failed; ``done`` may run before ``produce_then`` returns (a full local
queue, a refused record). ``close`` waits for the outstanding records (their reports are then dropped:
the process stops, and the offsets they held stay uncommitted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fanout.config import LibrdkafkaConfig, Settings
from fanout.kafka.producer import produce_error, producer_config
from fanout.model.errors import FatalKafkaError, ProduceFailed

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
            log.error("%d attempt records were not acknowledged before shutdown", remaining)
