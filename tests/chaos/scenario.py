"""What every chaos scenario measures and reports: events lost (must be 0), duplicates (against a bound)
and how long delivery took to resume after the fault ended; plus a paced, idempotent producer and a
reader of the retry tiers."""

from __future__ import annotations

import functools
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from fanout.config import Settings
from tests.receivers import Received


@dataclass
class Outcome:
    """One scenario's figures. ``resumed_after``: seconds from the end of the fault to the first delivery
    of an event that had not been delivered before it ended (None: it never resumed)."""

    scenario: str
    expected: int
    lost: int
    duplicates: int
    duplicate_bound: int
    resumed_after: float | None = None
    resume_bound: float | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        resumed = "n/a" if self.resume_bound is None else _seconds(self.resumed_after)
        bound = "" if self.resume_bound is None else f" (bound {self.resume_bound:.0f}s)"
        extra = "".join(f"; {k} {v}" for k, v in self.notes.items())
        return (
            f"{self.scenario}: {self.expected} events, lost {self.lost}, duplicates {self.duplicates} "
            f"(bound {self.duplicate_bound}), resumed after {resumed}{bound}{extra}"
        )

    def check(self) -> None:
        assert self.lost == 0, f"{self.lost} of {self.expected} events not delivered in time: {self.line()}"
        assert self.duplicates <= self.duplicate_bound, f"too many duplicates: {self.line()}"
        if self.resume_bound is not None:
            assert self.resumed_after is not None, f"delivery never resumed: {self.line()}"
            assert self.resumed_after <= self.resume_bound, f"delivery resumed too late: {self.line()}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def event_ids(requests: Iterable[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in requests]


def tally(requests: list[Received], expected: set[str]) -> tuple[int, int]:
    """(lost, duplicates): expected ids that never arrived, and requests beyond one per id."""
    ids = event_ids(requests)
    return len(expected - set(ids)), len(ids) - len(set(ids))


def resumed_after(requests: list[Received], healed_at: float, wanted: set[str] | None = None) -> float | None:
    """Seconds from ``healed_at`` to the first delivery of an id (in ``wanted``, if given) that had not
    arrived before ``healed_at``."""
    before = {r.headers["webhook-id"] for r in requests if r.at < healed_at}
    after = [
        r.at
        for r in requests
        if r.at >= healed_at
        and r.headers["webhook-id"] not in before
        and (wanted is None or r.headers["webhook-id"] in wanted)
    ]
    return min(after) - healed_at if after else None


def first_deliveries(requests: Iterable[Received]) -> dict[str, float]:
    """When each event id first arrived."""
    first: dict[str, float] = {}
    for r in requests:
        first.setdefault(r.headers["webhook-id"], r.at)
    return first


def longest_gap(times: Iterable[float]) -> float:
    ordered = sorted(times)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


class PacedProducer:
    """Produces ``values`` at ``rate`` per second from a thread, idempotently (a producer retry after a
    broker restart never duplicates a record, so every duplicate the receiver sees is fanout's).
    ``scheduled(i)`` is when value i was due to be produced, ``acked[i]`` when the brokers acknowledged
    it (wall clock): from then on it was fanout's to deliver."""

    def __init__(self, settings: Settings, topic: str, values: list[bytes], rate: float) -> None:
        self._conf = {
            **settings.kafka.librdkafka(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
        self._topic = topic
        self._values = values
        self._rate = rate
        self.started_at = 0.0
        self.acked: list[float | None] = [None] * len(values)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)

    def start(self) -> PacedProducer:
        self.started_at = time.time()
        self._thread.start()
        return self

    def scheduled(self, i: int) -> float:
        return self.started_at + i / self._rate

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the producer did not finish within {timeout}s"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            producer = Producer(self._conf)
            for i, value in enumerate(self._values):
                delay = self.scheduled(i) - time.time()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not synchronising with anything
                producer.produce(self._topic, value=value, on_delivery=functools.partial(self._on_ack, i))
                producer.poll(0)
            assert producer.flush(120) == 0, "records still unacknowledged after 120s"
        except BaseException as exc:
            self.error = exc

    def _on_ack(self, i: int, error: object, msg: object) -> None:
        if error is None:
            self.acked[i] = time.time()


def retry_records_per_event(settings: Settings, subscription_id: str) -> Counter[str]:
    """How many times each event was written to a retry tier for ``subscription_id`` (read to the end)."""
    topics = [settings.topics.retry(i) for i in range(len(settings.retry.tiers))]
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"chaos-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    counts: Counter[str] = Counter()
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                headers = dict(msg.headers() or [])
                if headers.get("fanout-subscription") == subscription_id.encode():
                    counts[headers.get("fanout-event-id", b"?").decode()] += 1
                if (msg.offset() or 0) + 1 >= ends.get(tp, 0):
                    ends.pop(tp, None)
        assert not ends, f"could not read the retry tiers to their end: {ends}"
    finally:
        consumer.close()
    return counts
