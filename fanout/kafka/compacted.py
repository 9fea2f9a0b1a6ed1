"""A compacted topic as a store of bytes keyed by id: read it to its end, follow it, and write to it
with compare-and-set semantics (the subscriptions topic: ``fanout.control.subscriptions``).

Records are (key, value) pairs of bytes; a value of None is a tombstone. Readers use
``read_committed`` and hand every record, in offset order, to the caller's ``Apply``, which folds it
into the caller's state (what a record means, which version it carries, whether it is readable at
all, is the caller's business) and says whether the state changed. The topic has one partition.

**Compare-and-set.** Kafka cannot reject a write, so writers serialise themselves: every writer of the
topic uses the same ``transactional.id``. ``init_transactions`` fences any other writer, and a fenced
writer's transaction can no longer commit. ``transact`` therefore reads the topic to its end *after*
its producer was initialised (into a fresh ``Plan``), lets the plan decide the writes from what it
read (the plan compares versions and raises to refuse), and commits; if another writer initialised in
between, the commit fails as fenced, and it starts over with a new plan and a new read. No reader ever
sees a write that lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from fanout.config import Settings
from fanout.kafka.ranges import topic_partitions
from fanout.model.errors import FanoutError

log = logging.getLogger("fanout.kafka.compacted")

WRITE_ATTEMPTS = 12
COMMIT_ATTEMPTS = 3
TIMEOUT = 30.0
# consume(n, timeout) waits out its timeout unless n records arrive, even after the end-of-partition
# event: poll briefly, so that reading to the end takes as long as the reading, not a full second.
READ_POLL_SECONDS = 0.05
FOLLOW_POLL_SECONDS = 0.2

Apply = Callable[[bytes | None, bytes | None], bool]
"""Fold one record (key, value; None for a tombstone) into the caller's state; True if it changed."""


@dataclass(frozen=True, slots=True)
class Write:
    """One record to write: ``value`` None is a tombstone."""

    key: bytes
    value: bytes | None


class Plan(Protocol):
    """One compare-and-set attempt: ``apply`` receives every record of the topic, then ``writes``
    decides what to write from them (it may raise to refuse: nothing is written)."""

    def apply(self, key: bytes | None, value: bytes | None) -> bool: ...

    def writes(self) -> Sequence[Write]: ...


P = TypeVar("P", bound=Plan)


def _reader(settings: Settings, to_the_end: bool = False) -> Consumer:
    """A consumer without a group. ``to_the_end``: it reads to the end and stops, so the broker should
    not hold an empty fetch for long (that wait is what the end of the partition costs)."""
    return Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"fanout-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            **({"fetch.wait.max.ms": 10} if to_the_end else {}),
        }
    )


def _assign_all(consumer: Consumer, topic: str) -> set[int]:
    partitions = topic_partitions(consumer, topic)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return partitions


def read_to_end(settings: Settings, topic: str, apply: Apply) -> None:
    """Hand every record of ``topic``, from its beginning to its end, to ``apply``. Blocking; Kafka
    errors raise ``KafkaException``, a missing topic ``FanoutError``."""
    consumer = _reader(settings, to_the_end=True)
    try:
        pending = _assign_all(consumer, topic)
        while pending:
            for msg in consumer.consume(1000, READ_POLL_SECONDS):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    raise KafkaException(error)
                apply(msg.key(), msg.value())
    finally:
        consumer.close()


def _commit(producer: Producer) -> None:
    """Commit, retrying the commit itself on a retriable error (the transaction may already be done)."""
    for _ in range(COMMIT_ATTEMPTS - 1):
        try:
            producer.commit_transaction(TIMEOUT)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
    producer.commit_transaction(TIMEOUT)


def _offset_into(offsets: dict[int, int], index: int) -> Callable[[KafkaError | None, Message], None]:
    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is None and msg.offset() is not None:
            offsets[index] = msg.offset() or 0

    return delivered


class CompactedTopic:
    """Reads and compare-and-set writes of one compacted topic (blocking; call from a thread).
    ``writer_id`` is the ``transactional.id`` every writer of the topic shares."""

    def __init__(self, settings: Settings, topic: str, writer_id: str) -> None:
        self._settings = settings
        self.topic = topic
        self._writer_id = writer_id
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def read(self, apply: Apply) -> None:
        read_to_end(self._settings, self.topic, apply)

    def _fresh_producer(self) -> Producer:
        producer = Producer(
            {
                **self._settings.kafka.librdkafka(),
                "transactional.id": self._writer_id,
                "enable.idempotence": True,
                "acks": "all",
                "transaction.timeout.ms": 60_000,
            }
        )
        producer.init_transactions(TIMEOUT)
        return producer

    def transact(self, new_plan: Callable[[], P]) -> tuple[P, list[int]]:
        """Read the topic into ``new_plan()``, write its ``writes()`` in one transaction; returns the
        plan that was committed and, per write, the offset it was written at (-1 if unknown). Starts
        over, after a random pause, when another writer fenced this one; ``FanoutError`` after
        ``WRITE_ATTEMPTS``."""
        with self._lock:
            last: Exception | None = None
            for attempt in range(WRITE_ATTEMPTS):
                producer = None
                try:
                    if self._producer is None:
                        self._producer = self._fresh_producer()
                    producer = self._producer
                    plan = new_plan()
                    self.read(plan.apply)
                    writes = plan.writes()
                    if not writes:
                        return plan, []
                    offsets: dict[int, int] = {}
                    producer.begin_transaction()
                    for i, write in enumerate(writes):
                        producer.produce(
                            self.topic, key=write.key, value=write.value, on_delivery=_offset_into(offsets, i)
                        )
                    _commit(producer)
                    return plan, [offsets.get(i, -1) for i in range(len(writes))]
                except KafkaException as exc:
                    last = exc
                    error: KafkaError = exc.args[0]
                    self._abandon(producer, error)
                    log.info("%s: write interrupted (%s); starting over", self.topic, error.str())
                    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
            raise FanoutError(f"could not write the {self.topic} topic: {last}")

    def _abandon(self, producer: Producer | None, error: KafkaError) -> None:
        if producer is not None and error.txn_requires_abort():
            try:
                producer.abort_transaction(TIMEOUT)
                return
            except KafkaException:
                pass
        self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


class TopicFollower:
    """Follows a compacted topic from its beginning on its own thread. Every record goes to ``apply``
    (on that thread); ``on_change()`` is called after the first read to the end (``ready`` is set then)
    and after every later batch in which ``apply`` reported a change.

    ``position`` is the offset after the last record read; ``on_position(position)``, if given, is
    called after every batch that moved it, once ready (so a writer can wait until its own write was
    read). ``error`` is set, and ``ready`` too, when following stopped on an error."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        apply: Apply,
        on_change: Callable[[], None],
        on_position: Callable[[int], None] | None = None,
        thread_name: str = "fanout-follower",
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._apply = apply
        self._on_change = on_change
        self._on_position = on_position
        self.position = 0
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            consumer = _reader(self._settings)
        except KafkaException as exc:
            self.error = exc
            self.ready.set()
            return
        try:
            self._follow(consumer)
        except Exception as exc:
            log.exception("following %s failed", self.topic)
            self.error = exc
            self.ready.set()
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        pending = _assign_all(consumer, self.topic)
        changed = False
        while not self._stop.is_set():
            position = self.position
            for msg in consumer.consume(1000, FOLLOW_POLL_SECONDS):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                    elif error.fatal():
                        raise KafkaException(error)
                    else:
                        log.warning("%s: %s", self.topic, error.str())
                    continue
                changed |= self._apply(msg.key(), msg.value())
                self.position = (msg.offset() or 0) + 1
            if not pending and (changed or not self.ready.is_set()):
                self._on_change()
                changed = False
                self.ready.set()
            if self.ready.is_set() and self._on_position is not None and self.position != position:
                self._on_position(self.position)
