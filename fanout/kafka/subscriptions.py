"""The subscriptions topic: the runtime source of truth for the routing table.

Compacted, key = subscription id, value = the subscription as JSON (with its ``version``), tombstone =
delete. Readers use ``read_committed`` and take the last record per key.

**Compare-and-set.** Kafka cannot reject a write, so writers serialise themselves: every writer uses
the same ``transactional.id``. ``init_transactions`` fences any other writer, and a fenced writer's
transaction can no longer commit. A write therefore reads the topic to its end *after* its producer
was initialised, checks the expected version, and commits; if another writer initialised in between,
the commit fails as fenced, and the write starts over from the read. Stale versions raise
``VersionConflict``; no reader ever sees a write that lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from fanout.config import Settings
from fanout.errors import FanoutError, ValidationFailed, VersionConflict
from fanout.subscription import Subscription, parse_subscription

log = logging.getLogger("fanout.kafka.subscriptions")

NEW_TOPIC_GRACE = 5.0
WRITE_ATTEMPTS = 12
COMMIT_ATTEMPTS = 3
TIMEOUT = 30.0


@dataclass(frozen=True)
class Change:
    """One record to write: a new subscription document, or a tombstone (``sub`` None)."""

    key: str
    sub: Subscription | None


def _reader(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"fanout-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )


def _assign_all(consumer: Consumer, topic: str) -> set[int]:
    deadline = time.monotonic() + NEW_TOPIC_GRACE
    while True:
        info = consumer.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
        if info is not None and info.error is None and info.partitions:
            break
        if time.monotonic() > deadline:  # a topic created a moment ago may not be in every broker's metadata
            raise FanoutError(f"topic {topic} is missing; run `fanout topics create` first")
        time.sleep(0.1)
    partitions = set(info.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return partitions


def _decode(key: bytes | None, value: bytes | None) -> tuple[str, Subscription | None] | None:
    sub_id = (key or b"").decode("utf-8", "replace")
    if value is None:
        return sub_id, None
    try:
        return sub_id, parse_subscription(orjson.loads(value), default_id=sub_id)
    except (orjson.JSONDecodeError, ValidationFailed) as exc:
        log.error("ignoring an invalid record for subscription %s: %s", sub_id, exc)
        return None


def read_to_end(settings: Settings) -> dict[str, Subscription]:
    """Every live subscription, read from the beginning of the topic to its end."""
    consumer = _reader(settings)
    try:
        pending = _assign_all(consumer, settings.topics.subscriptions)
        state: dict[str, Subscription] = {}
        while pending:
            for msg in consumer.consume(1000, 1.0):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    raise KafkaException(error)
                _apply(state, _decode(msg.key(), msg.value()))
        return state
    finally:
        consumer.close()


def _apply(state: dict[str, Subscription], decoded: tuple[str, Subscription | None] | None) -> bool:
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

    def transact(self, plan: Callable[[dict[str, Subscription]], list[Change]]) -> list[Change]:
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
                    producer.begin_transaction()
                    for change in changes:
                        value = None if change.sub is None else orjson.dumps(change.sub.document())
                        producer.produce(self._topic, key=change.key.encode(), value=value)
                    _commit(producer)
                    return changes
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

        def plan(current: dict[str, Subscription]) -> list[Change]:
            existing = current.get(sub.id)
            version = existing.version if existing else None
            if create and existing is not None:
                raise VersionConflict(sub.id, None, version)
            if expected_version is not None and expected_version != (version or 0):
                raise VersionConflict(sub.id, expected_version, version)
            return [Change(sub.id, sub.model_copy(update={"version": (version or 0) + 1}))]

        return self._only_sub(self.transact(plan))

    def update(
        self, sub_id: str, change: Callable[[Subscription], Subscription], expected_version: int | None = None
    ) -> Subscription:
        """Apply ``change`` to the current version of ``sub_id`` and write the result."""

        def plan(current: dict[str, Subscription]) -> list[Change]:
            existing = current.get(sub_id)
            if existing is None:
                raise KeyError(sub_id)
            if expected_version is not None and expected_version != existing.version:
                raise VersionConflict(sub_id, expected_version, existing.version)
            return [Change(sub_id, change(existing).model_copy(update={"version": existing.version + 1}))]

        return self._only_sub(self.transact(plan))

    def delete(self, sub_id: str, expected_version: int | None = None) -> bool:
        def plan(current: dict[str, Subscription]) -> list[Change]:
            existing = current.get(sub_id)
            if existing is None:
                return []
            if expected_version is not None and expected_version != existing.version:
                raise VersionConflict(sub_id, expected_version, existing.version)
            return [Change(sub_id, None)]

        return bool(self.transact(plan))

    def apply(self, subs: Iterable[Subscription], prune: bool = False) -> list[Change]:
        """Upsert ``subs`` (unchanged ones are skipped); with ``prune`` delete every other subscription."""
        wanted = {s.id: s for s in subs}

        def plan(current: dict[str, Subscription]) -> list[Change]:
            changes = []
            for sub_id, sub in wanted.items():
                existing = current.get(sub_id)
                if existing is not None and existing.model_copy(update={"version": 0}) == sub.model_copy(
                    update={"version": 0}
                ):
                    continue
                changes.append(
                    Change(
                        sub_id, sub.model_copy(update={"version": (existing.version if existing else 0) + 1})
                    )
                )
            if prune:
                changes.extend(Change(sub_id, None) for sub_id in current.keys() - wanted.keys())
            return changes

        return self.transact(plan)

    @staticmethod
    def _only_sub(changes: list[Change]) -> Subscription:
        assert len(changes) == 1 and changes[0].sub is not None
        return changes[0].sub

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


class TableWatcher:
    """Follows the subscriptions topic on its own thread; calls ``on_change(state)`` after the initial
    read to the end (``ready`` is set then) and after every batch that changed something."""

    def __init__(self, settings: Settings, on_change: Callable[[dict[str, Subscription]], None]) -> None:
        self._settings = settings
        self._on_change = on_change
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
                    changed |= _apply(state, _decode(msg.key(), msg.value()))
                if not pending and (changed or not self.ready.is_set()):
                    self._on_change(dict(state))
                    changed = False
                    self.ready.set()
        except Exception as exc:
            log.exception("the subscriptions watcher failed")
            self.error = exc
            self.ready.set()
        finally:
            consumer.close()
