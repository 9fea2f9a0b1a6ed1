"""The rebalance callbacks of the consumer thread, and the drain-then-commit they share with shutdown.

librdkafka runs ``on_assign``, ``on_revoke`` and ``on_lost`` inside ``poll()``/``consume()``, on the
consumer thread. Assigned partitions get a new local epoch (``Assignment``) and an unknown pause flag
(``PauseBook``); the loop is told after the callback returns. A revoke blocks the consumer thread while
the loop drains the partitions' deliveries under ``drain_timeout``, then commits the offsets the drain
returned, synchronously. Lost partitions (the session expired) are not drained: the loop closes their
trackers by epoch, without a commit, and without being awaited. Whatever the thread still holds of a
partition that changed hands is dropped (``forget``).

Callbacks must not call client methods that set up a call state (``list_topics``, ``poll``...):
confluent-kafka keeps one per thread, and the nested call clears the outer one. So the loop is told the
new ownership (``announce``) after ``consume()`` returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fanout.kafka.assignment import Assignment
from fanout.kafka.pauses import PauseBook
from fanout.model.ownership import Ownership

log = logging.getLogger("fanout.kafka.consumer")

TP = tuple[str, int]
# (partitions and the epoch they were assigned in, or None for all; monotonic deadline) -> offsets
Drain = Callable[[dict[TP, int] | None, float], Coroutine[Any, Any, dict[TP, int]]]


class Rebalance:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        assignment: Assignment,
        pauses: PauseBook,
        forget: Callable[[Collection[TP]], None],
        assigned: Callable[[list[TP], int], None],
        drain: Drain,
        ownership: Callable[[Ownership], None],
        drain_timeout: float,
        joined: threading.Event,
    ) -> None:
        self._loop = loop
        self._assignment = assignment
        self._pauses = pauses
        self._forget = forget
        self._assigned = assigned
        self._drain_hook = drain
        self._ownership = ownership
        self._drain_timeout = drain_timeout
        self._joined = joined

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        epoch = self._assignment.assign(tps)
        self._forget(set(tps))
        self._pauses.assigned(tps)  # resumed or paused explicitly before the next fetch
        log.info("assigned %d partitions (epoch %d)", len(tps), epoch)
        self._loop.call_soon_threadsafe(self._assigned, tps, epoch)
        self._joined.set()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = self._assignment.owned((p.topic, p.partition) for p in partitions)
        if not owned:
            return
        offsets = self.drain(owned)
        commit(consumer, offsets)
        self._assignment.remove(owned)
        self._forget(owned.keys())
        self._pauses.removed(owned)
        log.info("revoked %d partitions, committed %d", len(owned), len(offsets))

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = self._assignment.remove((p.topic, p.partition) for p in partitions)
        self._forget(lost.keys())
        self._pauses.removed(lost)
        log.warning(
            "lost %d partitions; their uncommitted records will be re-read by the new owner", len(lost)
        )
        # Not awaited (the group may already have moved on): the drain closes only the trackers of
        # these epochs, so a re-assignment of the same partition that the loop sees first is untouched.
        asyncio.run_coroutine_threadsafe(self._drain_hook(lost, time.monotonic()), self._loop)

    def drain(self, tps: dict[TP, int] | None) -> dict[TP, int]:
        """Have the loop drain ``tps`` (None: every partition) under the deadline; the offsets to commit."""
        deadline = self._drain_timeout
        future = asyncio.run_coroutine_threadsafe(
            self._drain_hook(tps, time.monotonic() + deadline), self._loop
        )
        try:
            return future.result(timeout=deadline + 10)
        except Exception as exc:
            log.error("draining failed: %s", exc)
            return {}

    def announce(self, consumer: Consumer, topics: Iterable[str]) -> None:
        """Tell the loop which partitions this member owns now (for its share of the rate limits).

        Called after ``consume()`` returned, never inside a rebalance callback: ``list_topics`` ends the
        client's call state, and a callback later in the same ``consume()`` would then abort."""
        self._assignment.changed = False
        owned = self._assignment.partitions_by_topic()
        subscribed = set(topics)
        try:
            metadata = consumer.list_topics(timeout=10)
            totals = {t: len(m.partitions) for t, m in metadata.topics.items() if t in subscribed}
        except KafkaException as exc:
            log.warning("could not read partition counts (rate shares unchanged): %s", exc)
            return
        self._loop.call_soon_threadsafe(self._ownership, Ownership(owned, totals))


def commit(consumer: Consumer, offsets: dict[TP, int]) -> None:
    """Store, then commit synchronously. Storing too keeps a later auto-commit (librdkafka commits the
    stored offsets on close and on revoke) from moving the committed offset back."""
    if not offsets:
        return
    partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    try:
        consumer.store_offsets(offsets=partitions)
        consumer.commit(offsets=partitions, asynchronous=False)
    except KafkaException as exc:
        log.warning("commit on revoke failed (the next owner re-reads from the last commit): %s", exc)
