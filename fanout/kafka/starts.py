"""Where a consumer group starts reading when it has no committed offset (run before it joins).

Committing offsets for a group from outside it works only while the group is empty (the broker refuses
it, ``UNKNOWN_MEMBER_ID``, once a member has joined), so these run before ``subscribe`` and a member
that started second finds the offsets its predecessor committed, or leaves them alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from fanout.config import Settings

log = logging.getLogger("fanout.kafka.starts")


def _partitions(consumer: Consumer, topics: Iterable[str]) -> list[TopicPartition]:
    partitions: list[TopicPartition] = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is not None and metadata.error is None:
            partitions.extend(TopicPartition(topic, p) for p in metadata.partitions)
    return partitions


def start_retry_tiers_at_end(consumer: Consumer, topics: Iterable[str], retry_topics: Iterable[str]) -> None:
    """A group with no committed offset on any of ``topics`` (new, or its offsets expired) starts the
    retry tiers at their end. The records already there were written by other groups, or by this group
    in a previous life whose source offsets were committed long ago: re-reading them re-delivered old
    retries. Source topics keep ``auto.offset.reset``.

    Only a whole group counts as new: a running group's tier partition without a commit (nothing
    consumed from it yet) may hold this group's own not-yet-due retries, so it is read from the
    beginning, and the other groups' records there are skipped (``headers.for_group``)."""
    partitions = _partitions(consumer, topics)
    if not partitions or any(tp.offset >= 0 for tp in consumer.committed(partitions, timeout=10)):
        return
    retry = set(retry_topics)
    latest = [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in partitions if tp.topic in retry]
    if not latest:
        return
    ends = [
        tp for tp in consumer.offsets_for_times(latest, timeout=10) if tp.error is None and tp.offset >= 0
    ]
    if not ends:
        return
    try:
        consumer.commit(offsets=ends, asynchronous=False)
    except KafkaException as exc:
        # Another member joined first: it committed these (or will read the tiers as a running group).
        log.info("retry tiers: the group is not new after all, starting where it is (%s)", exc)
        return
    log.info("new group: the retry tiers start at their end (%d partitions)", len(ends))


def seed_offsets(settings: Settings, consumer: Consumer, topics: Iterable[str], source_group: str) -> None:
    """A new group (no committed offset on ``topics``) starts where ``source_group`` is, rather than at
    ``auto_offset_reset``: a key-ordered subscription added later gets the events the shared group has
    not delivered yet, not the topic's whole history. Partitions ``source_group`` never committed are
    left to ``auto_offset_reset``."""
    partitions = _partitions(consumer, topics)
    if not partitions or any(tp.offset >= 0 for tp in consumer.committed(partitions, timeout=10)):
        return
    source = Consumer({**settings.kafka.librdkafka(), "group.id": source_group, "enable.auto.commit": False})
    try:
        start = [tp for tp in source.committed(partitions, timeout=10) if tp.offset >= 0]
    finally:
        source.close()
    if start:
        consumer.commit(offsets=start, asynchronous=False)
        log.info("new group starts where %s is, on %d partitions", source_group, len(start))
