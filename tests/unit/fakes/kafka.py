"""An in-memory stand-in for the parts of ``confluent_kafka.Consumer`` the consumer thread uses.

``FakeBroker`` holds partition logs and one group's committed offsets. ``FakeConsumer`` is one member
of that group, and behaves as librdkafka does where the consumer thread depends on it:

- rebalance callbacks (``on_assign``, ``on_revoke``, ``on_lost``) run inside ``poll()``/``consume()``, on
  the calling thread; the test schedules them (``rebalance``, ``lose``), and ``subscribe`` schedules
  the assignment of every partition of the subscribed topics (a group of one);
- assignment is incremental: the partitions are assigned after ``on_assign`` returns, at their committed
  offset (or ``auto.offset.reset``); a revoke commits the stored offsets (auto-commit) after
  ``on_revoke`` returns;
- a partition's pause flag survives an incremental unassign and assign (issue 13, defect 1): a partition
  revoked while paused comes back paused until it is resumed;
- records fetched before a pause may still be returned (``prefetch``); ``seek`` drops what was
  fetched of the partition and fetches again from the offset;
- ``on_commit`` is served inside ``poll()``/``consume()`` after a commit (explicit, or ``auto_commit``);
- the client's call state: ``poll``, ``consume`` and ``list_topics`` called from inside a rebalance
  callback raise, as the nested call breaks the outer one in confluent-kafka;
- ``store_offsets`` and ``seek`` refuse partitions that are not assigned (``_STATE``).

Every call the consumer thread makes is recorded in ``calls`` (name, arguments as plain values).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition

TP = tuple[str, int]
OFFSET_INVALID = -1001


class FakeMessage:
    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int = 1_714_564_800_000,
        error: KafkaError | None = None,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._value = value
        self._key = key
        self._headers = headers
        self._timestamp = timestamp_ms
        self._error = error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def error(self) -> KafkaError | None:
        return self._error

    def __repr__(self) -> str:
        return f"FakeMessage({self._topic}/{self._partition}@{self._offset})"


class FakeBroker:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.logs: dict[TP, list[FakeMessage]] = {}
        self.committed: dict[TP, int] = {}

    def create(self, topic: str, partitions: int) -> None:
        with self.lock:
            for p in range(partitions):
                self.logs.setdefault((topic, p), [])

    def partitions(self, topic: str) -> list[int]:
        return sorted(p for t, p in self.logs if t == topic)

    def produce(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        key: bytes | None = None,
    ) -> int:
        with self.lock:
            log = self.logs[(topic, partition)]
            offset = len(log)
            log.append(FakeMessage(topic, partition, offset, value, key, headers))
            self.lock.notify_all()
            return offset


@dataclass
class _Fetch:
    position: int
    fetched: deque[FakeMessage] = field(default_factory=deque)


Callback = Callable[[Any, list[TopicPartition]], None]


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


class FakeConsumer:
    def __init__(self, broker: FakeBroker, config: dict[str, Any], fetch_size: int = 100) -> None:
        self.broker = broker
        self.config = config
        self.fetch_size = fetch_size
        self.max_block = 0.02
        self.calls: list[tuple[Any, ...]] = []
        self.assigned: dict[TP, _Fetch] = {}
        self.paused: set[TP] = set()  # librdkafka's flags: kept across unassign/assign
        self.stored: dict[TP, int] = {}
        self.closed = False
        self.topics: list[str] = []
        self._events: deque[tuple[str, list[TP]]] = deque()
        self._commits: deque[list[TopicPartition]] = deque()
        self._callbacks: dict[str, Callback] = {}
        self._in_callback = False
        self._turn = 0

    # -- what the test does ------------------------------------------------------------------------

    def rebalance(self, assign: Iterable[TP] = (), revoke: Iterable[TP] = ()) -> None:
        """Schedule a cooperative rebalance, served by the next ``poll``/``consume``: revoke, then assign."""
        with self.broker.lock:
            if revoke := list(revoke):
                self._events.append(("revoke", revoke))
            if assign := list(assign):
                self._events.append(("assign", assign))
            self.broker.lock.notify_all()

    def lose(self, partitions: Iterable[TP]) -> None:
        with self.broker.lock:
            self._events.append(("lost", list(partitions)))
            self.broker.lock.notify_all()

    def auto_commit(self) -> None:
        """What librdkafka does every ``auto.commit.interval.ms``: commit the stored offsets."""
        with self.broker.lock:
            self._commit_stored(list(self.assigned))

    def calls_of(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == name]

    # -- confluent_kafka.Consumer ----------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callback | None = None,
        on_revoke: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> None:
        self._check_open()
        with self.broker.lock:
            self.calls.append(("subscribe", list(topics)))
            self.topics = list(topics)
            self._callbacks = {
                name: cb
                for name, cb in (("assign", on_assign), ("revoke", on_revoke), ("lost", on_lost))
                if cb is not None
            }
            wanted = {tp for tp in self.broker.logs if tp[0] in topics}
            owned = set(self.assigned) | {tp for kind, tps in self._events if kind == "assign" for tp in tps}
            if gone := sorted(set(self.assigned) - wanted):
                self._events.append(("revoke", gone))
            if new := sorted(wanted - owned):
                self._events.append(("assign", new))

    def poll(self, timeout: float | None = None) -> FakeMessage | None:
        self._check_call_state("poll")
        self._serve()
        with self.broker.lock:
            taken = self._take(1)
            if not taken and not self._events:
                self.broker.lock.wait(min(timeout or 0.0, self.max_block))
                taken = self._take(1)
        self._serve()
        return taken[0] if taken else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self._check_call_state("consume")
        self._serve()
        with self.broker.lock:
            return self._take(num_messages)

    def pause(self, partitions: list[TopicPartition]) -> None:
        with self.broker.lock:
            self.calls.append(("pause", _tps(partitions)))
            self.paused.update(tp for tp in _tps(partitions) if tp in self.assigned)

    def resume(self, partitions: list[TopicPartition]) -> None:
        with self.broker.lock:
            self.calls.append(("resume", _tps(partitions)))
            self.paused.difference_update(tp for tp in _tps(partitions) if tp in self.assigned)

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        with self.broker.lock:
            self.calls.append(("seek", tp, partition.offset))
            fetch = self.assigned.get(tp)
            if fetch is None:
                raise KafkaException(KafkaError(KafkaError._STATE, "seek: partition not assigned"))
            fetch.fetched.clear()
            fetch.position = partition.offset

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        with self.broker.lock:
            self.calls.append(("store", {(p.topic, p.partition): p.offset for p in offsets}))
            if any((p.topic, p.partition) not in self.assigned for p in offsets):
                raise KafkaException(KafkaError(KafkaError._STATE, "store: partition not assigned"))
            for p in offsets:
                self.stored[(p.topic, p.partition)] = p.offset

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> list[TopicPartition]:
        with self.broker.lock:
            if offsets is None:
                return self._commit_stored(list(self.assigned))
            self.calls.append(("commit", {(p.topic, p.partition): p.offset for p in offsets}))
            for p in offsets:
                self.broker.committed[(p.topic, p.partition)] = p.offset
            done = [TopicPartition(p.topic, p.partition, p.offset) for p in offsets]
            self._commits.append(done)
            return done

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        with self.broker.lock:
            return [
                TopicPartition(
                    p.topic, p.partition, self.broker.committed.get((p.topic, p.partition), OFFSET_INVALID)
                )
                for p in partitions
            ]

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        with self.broker.lock:
            out = []
            for p in partitions:
                assert p.offset == OFFSET_END, "the fake knows only the end"
                end = len(self.broker.logs[(p.topic, p.partition)])
                out.append(TopicPartition(p.topic, p.partition, end))
            return out

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        self._check_call_state("list_topics")
        with self.broker.lock:
            names = {t for t, _ in self.broker.logs}
            topics = {
                name: SimpleNamespace(partitions={p: None for p in self.broker.partitions(name)}, error=None)
                for name in names
                if topic is None or name == topic
            }
            return SimpleNamespace(topics=topics)

    def assignment(self) -> list[TopicPartition]:
        with self.broker.lock:
            return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def close(self) -> None:
        self._check_open()
        self.calls.append(("close",))
        if self.assigned and "revoke" in self._callbacks:
            self._run_callback("revoke", sorted(self.assigned))
        with self.broker.lock:
            self._commit_stored(list(self.assigned))
            self.assigned.clear()
        self.closed = True

    # -- inside ----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("Consumer closed")

    def _check_call_state(self, name: str) -> None:
        self._check_open()
        if self._in_callback:
            raise RuntimeError(f"{name}() called from inside a rebalance callback: it ends the outer call")

    def _run_callback(self, kind: str, tps: list[TP]) -> None:
        callback = self._callbacks.get(kind)
        if callback is None:
            return
        self._in_callback = True
        try:
            callback(self, [TopicPartition(t, p) for t, p in tps])
        finally:
            self._in_callback = False

    def _serve(self) -> None:
        """Rebalances, then commit callbacks: what librdkafka serves inside poll()/consume()."""
        while True:
            with self.broker.lock:
                if not self._events:
                    break
                kind, tps = self._events.popleft()
            if kind == "assign":
                self._run_callback("assign", tps)
                with self.broker.lock:
                    reset = self.config.get("auto.offset.reset", "earliest")
                    for tp in tps:
                        start = self.broker.committed.get(tp)
                        if start is None:
                            start = len(self.broker.logs[tp]) if reset == "latest" else 0
                        self.assigned[tp] = _Fetch(start)
            else:
                self._run_callback(kind, [tp for tp in tps if tp in self.assigned])
                with self.broker.lock:
                    if kind == "revoke":
                        self._commit_stored(tps)
                    for tp in tps:
                        self.assigned.pop(tp, None)
                        self.stored.pop(tp, None)
        on_commit = self.config.get("on_commit")
        while True:
            with self.broker.lock:
                if not self._commits:
                    break
                done = self._commits.popleft()
            if on_commit is not None:
                on_commit(None, done)

    def _commit_stored(self, tps: list[TP]) -> list[TopicPartition]:
        changed = [
            TopicPartition(t, p, offset)
            for (t, p) in tps
            if (offset := self.stored.get((t, p))) is not None and self.broker.committed.get((t, p)) != offset
        ]
        if changed:
            self.calls.append(("auto-commit", {(p.topic, p.partition): p.offset for p in changed}))
            for p in changed:
                self.broker.committed[(p.topic, p.partition)] = p.offset
            self._commits.append(changed)
        return changed

    def _take(self, num: int) -> list[FakeMessage]:
        for tp, fetch in self.assigned.items():
            if tp in self.paused or len(fetch.fetched) >= self.fetch_size:
                continue
            log = self.broker.logs[tp]
            end = min(len(log), fetch.position + self.fetch_size - len(fetch.fetched))
            fetch.fetched.extend(log[fetch.position : end])
            fetch.position = max(fetch.position, end)
        out: list[FakeMessage] = []
        order = sorted(self.assigned)
        if not order:
            return out
        self._turn = (self._turn + 1) % len(order)
        for tp in order[self._turn :] + order[: self._turn]:
            fetched = self.assigned[tp].fetched
            while fetched and len(out) < num:
                out.append(fetched.popleft())
        return out
