"""Reading offset ranges of a topic without a consumer group (dead letters, replays, job events).

A ``RangeReader`` assigns partitions at chosen offsets and reads each up to an end offset fixed when
the read started (records written later are not part of it), as ``RangeRecord`` values. A partition
is finished at its end, or at the end of its log (``enable.partition.eof``), whichever comes first, so
gaps (transaction markers, compaction, retention) never stall it. Blocking: call from a thread. Kafka
errors are raised as ``FanoutError`` (the API answers 503 for them).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from fanout.config import Settings
from fanout.model.errors import FanoutError
from fanout.model.event import Headers

F = TypeVar("F", bound=Callable[..., Any])
TIMEOUT = 30.0
BATCH = 500
METADATA_WAIT = 5.0
METADATA_RETRY = 0.2
POLL_SECONDS = 0.05  # consume() waits out its timeout unless BATCH records arrive


@dataclass(frozen=True, slots=True)
class RangeRecord:
    """A record read from a range: where it is, its timestamp (epoch ms), and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def _record(msg: Message) -> RangeRecord:
    return RangeRecord(
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        msg.timestamp()[1],
        msg.key(),
        msg.value(),
        cast(Headers, msg.headers() or []),
    )


def _kafka_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except KafkaException as exc:
            raise FanoutError(f"Kafka: {exc.args[0]}") from None

    return cast(F, wrapped)


def topic_partitions(client: Consumer, topic: str, wait: float = METADATA_WAIT) -> set[int]:
    """The partitions of ``topic``. A topic created a moment ago may not be in every broker's metadata
    yet: ask again for up to ``wait`` seconds before calling it missing."""
    deadline = time.monotonic() + wait
    while True:
        info = client.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
        if info is not None and info.error is None and info.partitions:
            return set(info.partitions)
        if time.monotonic() >= deadline:
            raise FanoutError(f"topic {topic} is missing; run `fanout topics create` first")
        time.sleep(METADATA_RETRY)


class RangeReader:
    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer(
            {
                **settings.kafka.librdkafka(),
                "group.id": f"fanout-range-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    @_kafka_errors
    def partitions(self, topic: str) -> list[int]:
        return sorted(topic_partitions(self._consumer, topic))

    @_kafka_errors
    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)
            for p in partitions
        }

    @_kafka_errors
    def offsets_at(
        self, topic: str, partitions: list[int], ms: int | None, beginning: bool
    ) -> dict[int, int]:
        """Per partition: the first offset whose timestamp is at least ``ms``; without ``ms`` (or when
        no record is that recent) the log's start (``beginning``) or end."""
        if not partitions:
            return {}
        marks = self.watermarks(topic, partitions)
        if ms is None:
            return {p: marks[p][0] if beginning else marks[p][1] for p in partitions}
        found = self._consumer.offsets_for_times(
            [TopicPartition(topic, p, max(0, ms)) for p in partitions], timeout=TIMEOUT
        )
        offsets = {}
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
            offsets[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
        return offsets

    def read(self, topic: str, starts: dict[int, int], ends: dict[int, int]) -> Iterator[RangeRecord]:
        """Records with ``starts[p] <= offset < ends[p]``, partitions interleaved, each in order. The
        caller may stop early (``pause`` skips the rest of one partition)."""
        try:
            for msg in self._read(topic, starts, ends):
                yield _record(msg)
        except KafkaException as exc:
            raise FanoutError(f"Kafka: {exc.args[0]}") from None

    def _read(self, topic: str, starts: dict[int, int], ends: dict[int, int]) -> Iterator[Message]:
        pending = {p for p, start in starts.items() if start < ends.get(p, 0)}
        self._pending = pending
        if not pending:
            return
        self._topic = topic
        self._consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        try:
            while pending:
                for msg in self._consumer.consume(BATCH, POLL_SECONDS):
                    partition = msg.partition() or 0
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(partition)
                            continue
                        raise KafkaException(error)
                    if partition not in pending:
                        continue
                    if (msg.offset() or 0) >= ends[partition]:
                        pending.discard(partition)
                        continue
                    yield msg
        finally:
            self._consumer.unassign()

    def pause(self, partition: int) -> None:
        """Stop reading ``partition`` in the current ``read``."""
        self._pending.discard(partition)
