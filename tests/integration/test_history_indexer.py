"""The history indexer against the real broker: it indexes a real attempts topic, resumes from the
offsets stored in the index (not from the beginning), rebuilds a missing or corrupt index from the
topic, prunes rows past the retention, and follows the topic's partitions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from fanout.config import HistorySettings, Settings
from fanout.history import indexer as history_indexer
from fanout.history.codec import encode
from fanout.history.indexer import HistoryIndexer
from fanout.history.queries import AttemptQuery
from fanout.history.record import AttemptRecord, Outcome
from fanout.history.store import HistoryStore
from fanout.kafka.topics import TopicSpec, create_topics, describe_topics, internal_topics
from tests.history_records import VALIDATOR, make
from tests.integration.engine import wait_for_topics

RETENTION = 3600
TIMEOUT = 90.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@pytest.fixture
def hsettings(settings: Settings) -> Settings:
    return settings.model_copy(update={"history": HistorySettings(retention=RETENTION)})


def attempts_spec(settings: Settings, partitions: int | None = None) -> TopicSpec:
    spec = next(t for t in internal_topics(settings) if t.name == settings.topics.attempts)
    if partitions is not None:
        spec = TopicSpec(spec.name, spec.role, partitions, spec.replication_factor, spec.config)
    return spec


def produce(settings: Settings, values: list[tuple[bytes, bytes]], partition: int | None = None) -> None:
    """Write ``values`` (key, value) to the attempts topic; every one acknowledged, or the test fails."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "enable.idempotence": True})
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            errors.append(error)

    for key, value in values:
        if partition is None:
            producer.produce(settings.topics.attempts, value=value, key=key, on_delivery=delivered)
        else:
            producer.produce(
                settings.topics.attempts, value=value, key=key, partition=partition, on_delivery=delivered
            )
    assert producer.flush(30) == 0
    assert not errors, errors


def records(prefix: str, n: int, time_ms: int) -> list[AttemptRecord]:
    outcomes = list(Outcome)
    return [
        make(
            outcomes[i % len(outcomes)],
            event_id=f"{prefix}-{i}",
            subscription=f"sub-{i % 10}",
            time_ms=time_ms + i,
            status=500 if outcomes[i % len(outcomes)] is Outcome.DEAD_LETTERED else None,
        )
        for i in range(n)
    ]


def encoded(rs: list[AttemptRecord]) -> list[tuple[bytes, bytes]]:
    return [(r.event_id.encode(), encode(r)) for r in rs]


def reader(settings: Settings, path: Path) -> HistoryIndexer:
    return HistoryIndexer(
        settings, HistoryStore(path, RETENTION), poll_seconds=0.1, metadata_interval=0.5, prune_interval=0.2
    )


@pytest.fixture
def readers() -> Iterator[list[HistoryIndexer]]:
    started: list[HistoryIndexer] = []
    yield started
    for r in started:
        r.stop()


def run(started: list[HistoryIndexer], settings: Settings, path: Path) -> HistoryIndexer:
    r = reader(settings, path)
    started.append(r)
    r.start()
    return r


def test_the_attempts_topic_is_created_with_the_history_retention(
    hsettings: Settings, admin: AdminClient
) -> None:
    spec = attempts_spec(hsettings)
    create_topics(admin, [spec])
    wait_for_topics(hsettings, [spec.name])
    (info,) = describe_topics(admin, [spec])
    assert info.exists and info.partitions == hsettings.topics.partitions
    assert info.config["retention.ms"] == str(RETENTION * 1000)
    assert info.config["cleanup.policy"] == "delete"


def test_the_index_resumes_from_its_offsets_is_rebuilt_when_missing_or_corrupt_and_prunes(
    hsettings: Settings, admin: AdminClient, tmp_path: Path, readers: list[HistoryIndexer]
) -> None:
    create_topics(admin, [attempts_spec(hsettings)])
    wait_for_topics(hsettings, [hsettings.topics.attempts])
    now = int(time.time() * 1000)
    old = records("old", 30, now - 2 * RETENTION * 1000)
    first = records("new", 300, now - 60_000)
    for r in old + first:
        VALIDATOR.validate(orjson.loads(encode(r)))
    produce(hsettings, [*encoded(old + first), (b"junk", b"not an attempt record")])
    path = tmp_path / "history.sqlite"

    one = run(readers, hsettings, path)
    wait_until(one.caught_up.is_set, "the index caught up")
    store = one.store
    assert (store.indexed, store.skipped) == (331 - 1, 1)
    wait_until(lambda: store.event("old-3") is None, "rows past the retention were pruned")
    assert one.status().lag_records == 0 and one.status().lag_seconds == 0
    event = store.event("new-1")
    assert event is not None and [s.subscription for s in event.subscriptions] == ["sub-1"]
    assert len(store.attempts("sub-0", AttemptQuery(limit=1000)).attempts) == 30
    assert sum(t.totals.attempted for t in store.overview(3600)) > 0
    stored = {p: o for (t, p), o in store.positions().items() if t == hsettings.topics.attempts}
    assert sum(stored.values()) == 331
    one.stop()

    more = records("more", 50, now)
    produce(hsettings, encoded(more))
    two = run(readers, hsettings, path)
    wait_until(two.caught_up.is_set, "the restarted index caught up")
    assert two.store.indexed == 50
    assert two.first_offsets and all(two.first_offsets[p] == stored[p] for p in two.first_offsets)
    assert all(offset > 0 for offset in two.first_offsets.values())
    assert two.store.skipped == 0  # the junk value (read before the restart) was not read again
    assert two.store.event("more-7") is not None and two.store.event("new-7") is not None
    two.stop()

    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    three = run(readers, hsettings, path)
    wait_until(three.caught_up.is_set, "the deleted index was rebuilt")
    assert three.store.indexed == 380 and three.store.skipped == 1
    assert set(three.first_offsets.values()) == {0}
    assert three.store.event("more-7") is not None and three.store.event("new-299") is not None
    wait_until(lambda: three.store.event("old-3") is None, "the rebuilt index pruned the old rows")

    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    data[4096:] = bytes((i * 7919) & 0xFF for i in range(len(data) - 4096))
    path.write_bytes(bytes(data))

    def corrupt_found_and_rebuilt() -> bool:
        try:
            for i in range(300):
                three.store.event(f"new-{i}")
        except Exception:
            pass
        return three.store.rebuilds == 1

    wait_until(corrupt_found_and_rebuilt, "a query found the index corrupt and the indexer rebuilt it")
    wait_until(lambda: three.caught_up.is_set() and three.store.event("new-299") is not None, "re-indexed")
    assert three.error is None


def test_the_indexer_waits_for_its_topic_and_follows_new_partitions(
    hsettings: Settings, admin: AdminClient, tmp_path: Path, readers: list[HistoryIndexer]
) -> None:
    r = run(readers, hsettings, tmp_path / "h.sqlite")
    status = r.status()
    assert status.lag_records is None and not status.caught_up
    create_topics(admin, [attempts_spec(hsettings, partitions=1)])
    wait_for_topics(hsettings, [hsettings.topics.attempts])
    now = int(time.time() * 1000)
    produce(hsettings, encoded(records("p0", 10, now)))
    wait_until(lambda: r.store.indexed == 10, "the first partition was indexed")
    topic = hsettings.topics.attempts
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    wait_until(
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3,
        "the broker's metadata shows the new partitions",
    )
    produce(hsettings, encoded(records("p2", 5, now)), partition=2)
    wait_until(lambda: r.store.indexed == 15, "the new partition was indexed")
    assert r.first_offsets[2] == 0
    wait_until(lambda: r.status().lag_records == 0, "the lag covers every partition")
    assert r.error is None


def test_a_batch_the_index_could_not_write_is_read_again_from_the_stored_offsets(
    hsettings: Settings,
    admin: AdminClient,
    tmp_path: Path,
    readers: list[HistoryIndexer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_indexer, "WRITE_RETRY", 0.1)
    create_topics(admin, [attempts_spec(hsettings)])
    wait_for_topics(hsettings, [hsettings.topics.attempts])
    now = int(time.time() * 1000)
    produce(hsettings, encoded(records("a", 40, now)))
    r = reader(hsettings, tmp_path / "h.sqlite")
    real = r.store.ingest
    failures = 0

    def disk_full_once(*args: object) -> object:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args)  # type: ignore[arg-type]

    r.store.ingest = disk_full_once  # type: ignore[method-assign]
    readers.append(r)
    r.start()
    wait_until(lambda: r.caught_up.is_set() or r.error is not None, "the index caught up after the failure")
    assert failures == 1 and r.error is None
    assert r.store.indexed == 40
    assert all(r.store.event(f"a-{i}") is not None for i in range(40))
