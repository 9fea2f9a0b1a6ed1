"""The subscriptions topic: the runtime source of truth for the routing table.

Compacted, key = subscription id, value = the subscription as JSON (with its ``version``), tombstone =
delete. Readers use ``read_committed`` and take the last record per key.

**Compare-and-set.** Kafka cannot reject a write, so writers serialise themselves: every writer uses
the same ``transactional.id``. ``init_transactions`` fences any other writer, and a fenced writer's
transaction can no longer commit. A write therefore reads the topic to its end *after* its producer
was initialised, checks the expected version, and commits; if another writer initialised in between,
the commit fails as fenced, and the write starts over from the read. Stale versions raise
``VersionConflict``; no reader ever sees a write that lost.

Secret fields are sealed on the way in and opened on the way out (``fanout.control.codec``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace

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
from fanout.control.codec import Decoded, SubscriptionCodec
from fanout.control.plans import Change, Plan, apply_plan, delete_plan, put_plan, update_plan
from fanout.kafka.ranges import topic_partitions
from fanout.model.errors import FanoutError
from fanout.model.subscription import Subscription

__all__ = ["Change", "SubscriptionStore", "TableWatcher", "read_to_end"]

log = logging.getLogger("fanout.kafka.subscriptions")

WRITE_ATTEMPTS = 12
COMMIT_ATTEMPTS = 3
TIMEOUT = 30.0
# consume(n, timeout) waits out its timeout unless n records arrive, even after the end-of-partition
# event: poll briefly, so that reading to the end takes as long as the reading, not a full second.
READ_POLL_SECONDS = 0.05


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


def read_to_end(settings: Settings) -> dict[str, Subscription]:
    """Every live subscription, read from the beginning of the topic to its end."""
    codec = SubscriptionCodec(settings.secrets)
    consumer = _reader(settings, to_the_end=True)
    try:
        pending = _assign_all(consumer, settings.topics.subscriptions)
        state: dict[str, Subscription] = {}
        while pending:
            for msg in consumer.consume(1000, READ_POLL_SECONDS):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    raise KafkaException(error)
                _apply(state, codec.decode(msg.key(), msg.value()))
        return state
    finally:
        consumer.close()


def _apply(state: dict[str, Subscription], decoded: Decoded | None) -> bool:
    if decoded is None:
        return False
    sub_id, sub = decoded
    if sub is None:
        return state.pop(sub_id, None) is not None
    state[sub_id] = sub
    return True


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


class SubscriptionStore:
    """Reads and compare-and-set writes of the subscriptions topic (blocking; call from a thread)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topics.subscriptions
        self._codec = SubscriptionCodec(settings.secrets)
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def read(self) -> dict[str, Subscription]:
        return read_to_end(self._settings)

    def _fresh_producer(self) -> Producer:
        producer = Producer(
            {
                **self._settings.kafka.librdkafka(),
                "transactional.id": f"{self._settings.topics.prefix}.subscriptions-writer",
                "enable.idempotence": True,
                "acks": "all",
                "transaction.timeout.ms": 60_000,
            }
        )
        producer.init_transactions(TIMEOUT)
        return producer

    def transact(self, plan: Plan) -> list[Change]:
        """Read the current state, let ``plan`` decide the changes (it may raise VersionConflict), write
        them in one transaction. Starts over, after a random pause, when another writer fenced this one."""
        with self._lock:
            last: Exception | None = None
            for attempt in range(WRITE_ATTEMPTS):
                producer = None
                try:
                    if self._producer is None:
                        self._producer = self._fresh_producer()
                    producer = self._producer
                    changes = plan(self.read())
                    if not changes:
                        return []
                    offsets: dict[int, int] = {}
                    producer.begin_transaction()
                    for i, change in enumerate(changes):
                        value = None if change.sub is None else self._codec.encode(change.sub)
                        producer.produce(
                            self._topic,
                            key=change.key.encode(),
                            value=value,
                            on_delivery=_offset_into(offsets, i),
                        )
                    _commit(producer)
                    return [replace(c, offset=offsets.get(i, -1)) for i, c in enumerate(changes)]
                except KafkaException as exc:
                    last = exc
                    error: KafkaError = exc.args[0]
                    self._abandon(producer, error)
                    log.info("subscriptions write interrupted (%s); starting over", error.str())
                    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
            raise FanoutError(f"could not write the subscriptions topic: {last}")

    def _abandon(self, producer: Producer | None, error: KafkaError) -> None:
        if producer is not None and error.txn_requires_abort():
            try:
                producer.abort_transaction(TIMEOUT)
                return
            except KafkaException:
                pass
        self._producer = None

    def put(
        self, sub: Subscription, expected_version: int | None = None, create: bool = False
    ) -> Subscription:
        """Write ``sub`` as the next version. ``expected_version`` (None: any) must match the current one;
        with ``create`` the subscription must not exist yet."""
        return self._only_sub(self.transact(put_plan(sub, expected_version, create)))

    def update(
        self, sub_id: str, change: Callable[[Subscription], Subscription], expected_version: int | None = None
    ) -> Subscription:
        """Apply ``change`` to the current version of ``sub_id`` and write the result (KeyError if it
        does not exist)."""
        return self._only_sub(self.transact(update_plan(sub_id, change, expected_version)))

    def delete(self, sub_id: str, expected_version: int | None = None) -> bool:
        return bool(self.transact(delete_plan(sub_id, expected_version)))

    def apply(self, subs: Iterable[Subscription], prune: bool = False) -> list[Change]:
        """Upsert ``subs`` (unchanged ones are skipped); with ``prune`` delete every other subscription."""
        return self.transact(apply_plan(subs, prune))

    def rewrite_all(self) -> list[Change]:
        """Write every subscription again as its next version: re-seals its secrets with the first key
        of ``secrets.keys`` (after a key rotation, before the old key is dropped)."""

        def plan(current: dict[str, Subscription]) -> list[Change]:
            return [Change(i, s.model_copy(update={"version": s.version + 1})) for i, s in current.items()]

        return self.transact(plan)

    @staticmethod
    def _only_sub(changes: list[Change]) -> Subscription:
        assert len(changes) == 1 and changes[0].sub is not None
        return changes[0].sub

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


def _offset_into(offsets: dict[int, int], index: int) -> Callable[[KafkaError | None, Message], None]:
    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is None and msg.offset() is not None:
            offsets[index] = msg.offset() or 0

    return delivered


class TableWatcher:
    """Follows the subscriptions topic on its own thread; calls ``on_change(state)`` after the initial
    read to the end (``ready`` is set then) and after every batch that changed something.

    ``position`` is the offset after the last record read; ``on_position(position)``, if given, is
    called after every batch that moved it (so a writer can wait until its own write was read)."""

    def __init__(
        self,
        settings: Settings,
        on_change: Callable[[dict[str, Subscription]], None],
        on_position: Callable[[int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_change = on_change
        self._on_position = on_position
        self._codec = SubscriptionCodec(settings.secrets)
        self.position = 0
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="fanout-subscriptions", daemon=True)

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
            pending = _assign_all(consumer, self._settings.topics.subscriptions)
            state: dict[str, Subscription] = {}
            changed = False
            while not self._stop.is_set():
                position = self.position
                for msg in consumer.consume(1000, 0.2):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition() or 0)
                        elif error.fatal():
                            raise KafkaException(error)
                        else:
                            log.warning("subscriptions topic: %s", error.str())
                        continue
                    changed |= _apply(state, self._codec.decode(msg.key(), msg.value()))
                    self.position = (msg.offset() or 0) + 1
                if not pending and (changed or not self.ready.is_set()):
                    self._on_change(dict(state))
                    changed = False
                    self.ready.set()
                if self.ready.is_set() and self._on_position is not None and self.position != position:
                    self._on_position(self.position)
        except Exception as exc:
            log.exception("the subscriptions watcher failed")
            self.error = exc
            self.ready.set()
        finally:
            consumer.close()
