"""A ``RecordSink`` polled on the event loop, for the publish API: no report thread.

``AsyncProducer`` serves delivery reports on a thread of its own, which takes the GIL from the loop for
every batch of reports and wakes the loop with ``call_soon_threadsafe``; at thousands of requests a
second those hand-offs cost the API more CPU than the produce itself. ``LoopSink`` has no thread: each
``produce`` first calls ``poll(0)`` (so under load reports are served as requests arrive), and while
records are outstanding a timer on the loop does so every ``interval`` seconds; each report settles its
future in line.

``produce`` returns a future that resolves to the record's ``RecordMetadata``, or fails with
``produce_error``'s class (``RecordTooLarge``, ``RecordRefused``, ``ProduceFailed``); a full local
queue or a refused record fails it at once. librdkafka reports every record within its
``message.timeout.ms``; as a safety net, a future still pending ``report_deadline`` seconds after its
produce fails with ``ProduceFailed`` (checked on the same timer, in produce order). ``close`` serves the
reports of the outstanding records on the loop for up to ``seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fanout.config import LibrdkafkaConfig, Settings
from fanout.kafka.producer import produce_error, producer_config
from fanout.model.errors import FatalKafkaError, ProduceFailed
from fanout.model.event import Headers
from fanout.model.ports import RecordMetadata

log = logging.getLogger("fanout.kafka.producer")


POLL_INTERVAL = 0.001
REPORT_DEADLINE = 60.0


class LoopSink:
    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        on_fatal: Callable[[FatalKafkaError], None] | None = None,
        extra: LibrdkafkaConfig | None = None,
        interval: float = POLL_INTERVAL,
        report_deadline: float = REPORT_DEADLINE,
    ) -> None:
        self._loop = loop
        self._on_fatal = on_fatal
        self._interval = interval
        self._deadline = report_deadline
        self._timer: asyncio.TimerHandle | None = None
        self._pending: deque[tuple[float, asyncio.Future[RecordMetadata]]] = deque()
        self._producer = Producer(producer_config(settings, error_cb=self._on_error, **(extra or {})))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.critical("fatal producer error: %s", error.str())
            if self._on_fatal is not None:
                self._on_fatal(FatalKafkaError(f"producer: {error.str()}"))
        else:
            log.warning("producer: %s", error.str())

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        loop = self._loop
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        self._producer.poll(0)  # reports that arrived since the last poll (0.2 us when there are none)

        def delivered(error: KafkaError | None, msg: Message) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(
                    RecordMetadata(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
                )
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
        self._pending.append((loop.time() + self._deadline, future))
        if self._timer is None:
            self._timer = loop.call_later(self._interval, self._poll)
        return future

    def _poll(self) -> None:
        self._timer = None
        self._producer.poll(0)
        pending = self._pending
        if pending:
            now = self._loop.time()
            while pending and (pending[0][1].done() or pending[0][0] <= now):
                _, future = pending.popleft()
                if not future.done():
                    future.set_exception(ProduceFailed("no delivery report"))
        if pending or len(self._producer):
            self._timer = self._loop.call_later(self._interval, self._poll)

    async def close(self, seconds: float = 30.0) -> None:
        """Serve the outstanding records' reports for up to ``seconds``; log those left unacknowledged."""
        until = self._loop.time() + seconds
        while len(self._producer) and self._loop.time() < until:
            self._producer.poll(0)
            await asyncio.sleep(self._interval)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        remaining = len(self._producer)
        if remaining:
            log.error("%d records were not acknowledged before shutdown", remaining)
