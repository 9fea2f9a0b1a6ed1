"""Scenario: a rate-limited subscription that finds a backlog waiting (issue 13, defect 2).

``paced_backlog`` produces ``n`` events before the dispatcher starts, runs it against one receiver
limited to ``per_second``, and reports what the receiver and the retry tiers saw: how fast the backlog
drained, how often each delivery was spilled, and what was lost or duplicated. The chaos suite can run it
under its own faults; the plain engine test asserts on it directly.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fanout.config import Settings
from fanout.model import headers as H
from fanout.runtime.app import DispatcherApp
from tests.integration.engine import (
    apply,
    create_engine_topics,
    events,
    header,
    produce,
    running,
    subscription,
)
from tests.receivers import Receiver


@dataclass(frozen=True)
class BacklogResult:
    n: int
    per_second: float
    drain_seconds: float  # first request to the last new event at the receiver
    distinct: int
    requests: int
    spills: Counter[str]  # spill records in the retry tiers, by event id
    stats: dict[str, int]  # the dispatcher's settle counters

    @property
    def drain_rate(self) -> float:
        return (self.distinct - 1) / self.drain_seconds if self.drain_seconds > 0 else float("inf")

    @property
    def lost(self) -> int:
        return self.n - self.distinct

    @property
    def duplicates(self) -> int:
        return self.requests - self.distinct

    @property
    def most_spills(self) -> int:
        return max(self.spills.values(), default=0)

    def summary(self) -> str:
        return (
            f"{self.distinct}/{self.n} events in {self.drain_seconds:.1f}s = {self.drain_rate:.2f}/s "
            f"(limit {self.per_second}/s); spill records {sum(self.spills.values())}, at most "
            f"{self.most_spills} for one event; duplicates {self.duplicates}; stats {self.stats}"
        )


def spill_records(settings: Settings, sub_id: str) -> Counter[tuple[str, str]]:
    """Spill records (retry records with a ``fanout-reason``) of ``sub_id`` in every tier, by event id and
    reason: each tier is read from its start to its end (high watermarks)."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"spills-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    spills: Counter[tuple[str, str]] = Counter()
    try:
        ends: dict[tuple[str, int], int] = {}
        for tier in range(len(settings.retry.tiers)):
            topic = settings.topics.retry(tier)
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                reason = header(msg, H.REASON)
                if header(msg, H.SUBSCRIPTION) == sub_id and reason:
                    spills[(header(msg, H.EVENT_ID) or "", reason)] += 1
                if (msg.offset() or 0) + 1 >= ends.get(tp, 0):
                    ends.pop(tp, None)
        assert not ends, f"could not read the retry tiers to their end: {ends}"
    finally:
        consumer.close()
    return spills


async def paced_backlog(
    settings: Settings,
    n: int = 500,
    per_second: float = 10,
    timeout: float | None = None,
    **app_options: Any,
) -> BacklogResult:
    """Produce ``n`` events, then start a dispatcher for one subscription limited to ``per_second``
    (burst 1) and wait until every event arrived at least once (or ``timeout``, by default three times
    the ideal drain time plus a minute)."""
    topic = f"{settings.topics.prefix}.backlog"
    create_engine_topics(settings, [topic])
    produce(settings, topic, events(n))
    limit = timeout if timeout is not None else 3 * n / per_second + 60
    async with Receiver() as receiver:
        sub = subscription("paced", receiver.url, [topic], rate_limit={"per_second": per_second, "burst": 1})
        await apply(settings, [sub])
        app: DispatcherApp
        async with running(settings, **app_options) as app:
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) >= n, limit)
            stats = dict(app.counts.totals())
        first_seen: dict[str, float] = {}
        for r in receiver.requests:
            first_seen.setdefault(r.headers["webhook-id"], r.at)
        times = sorted(first_seen.values())
        started = time.time() if not times else times[0]
        spills: Counter[str] = Counter()
        for (event_id, _), count in spill_records(settings, sub.id).items():
            spills[event_id] += count
    return BacklogResult(
        n=n,
        per_second=per_second,
        drain_seconds=(times[-1] - started) if times else 0.0,
        distinct=len(first_seen),
        requests=len(receiver.requests),
        spills=spills,
        stats=stats,
    )
