"""The control plane's stores over their Kafka ports, with in-memory fakes: the subscriptions store
(codec + compare-and-set plans over a keyed topic), the one replay writer (both replays' records are
retry records the dispatcher accepts), the source-replay routing, and the history indexer's batch sink."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from fanout.config import SecretsSettings, Settings
from fanout.control import replays
from fanout.control.plans import disabled
from fanout.control.replays import ReplayWriter
from fanout.control.secretbox import new_key
from fanout.control.subscriptions import SubscriptionStore
from fanout.history import indexer as history_indexer
from fanout.history.indexer import HistoryIndexer
from fanout.history.schema import IndexCorrupt
from fanout.history.store import HistoryStore
from fanout.kafka.compacted import Apply, Plan
from fanout.kafka.ranges import RangeRecord
from fanout.kafka.tail import ReadAgain, TailBatch
from fanout.model import headers as H
from fanout.model.errors import VersionConflict
from fanout.model.event import Headers
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import SECRET, make_sub

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class MemoryTopic:
    """A compacted topic in memory: every record kept in order; a transaction appends its writes."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.transactions = 0

    def read(self, apply: Apply) -> None:
        for key, value in list(self.records):
            apply(key, value)

    def transact(self, new_plan: Callable[[], Any]) -> tuple[Any, list[int]]:
        plan: Plan = new_plan()
        self.read(plan.apply)
        writes = plan.writes()
        offsets = []
        for write in writes:
            self.records.append((write.key, write.value))
            offsets.append(len(self.records) - 1)
        self.transactions += bool(writes)
        return plan, offsets

    def close(self) -> None:
        pass


def sealed_settings() -> Settings:
    return Settings(secrets=SecretsSettings(keys=[SecretStr(new_key())]))


def test_the_store_writes_versions_with_compare_and_set_and_seals_secrets() -> None:
    topic = MemoryTopic()
    store = SubscriptionStore(sealed_settings(), topic)
    first = store.put(make_sub(id="crm"), create=True)
    assert first.version == 1
    assert SECRET.encode() not in (topic.records[0][1] or b""), "secrets are sealed in the record"
    assert store.read()["crm"].secrets == [SECRET], "and opened on the way out"
    with pytest.raises(VersionConflict):
        store.put(make_sub(id="crm"), create=True)
    with pytest.raises(VersionConflict):
        store.put(make_sub(id="crm", url="https://b.example/in"), expected_version=7)
    second = store.update("crm", lambda s: disabled(s, "by hand"), expected_version=1)
    assert (second.version, second.enabled, second.disabled_reason) == (2, False, "by hand")
    with pytest.raises(KeyError):
        store.update("nobody", lambda s: s)
    changes = store.apply([make_sub(id="billing"), second.model_copy(update={"version": 0})], prune=False)
    assert [(c.key, c.offset) for c in changes] == [("billing", 2)], "an unchanged one is skipped"
    assert store.delete("crm", expected_version=2)
    assert topic.records[-1] == (b"crm", None), "a delete is a tombstone"
    assert not store.delete("crm")
    assert set(store.read()) == {"billing"}
    pruned = store.apply([make_sub(id="new")], prune=True)
    assert {(c.key, c.sub is None) for c in pruned} == {("new", False), ("billing", True)}
    assert set(store.read()) == {"new"}


def test_an_unreadable_record_leaves_the_previous_version_in_place() -> None:
    settings = sealed_settings()
    topic = MemoryTopic()
    store = SubscriptionStore(settings, topic)
    store.put(make_sub(id="crm"))
    topic.records.append((b"crm", b"{not json"))
    topic.records.append((b"crm", orjson.dumps({"id": "crm", "url": "ftp://nope"})))
    assert store.read()["crm"].version == 1
    assert store.put(make_sub(id="crm"), expected_version=1).version == 2, "plans see the readable one"
    other_key = Settings(secrets=SecretsSettings(keys=[SecretStr(new_key())]))
    assert SubscriptionStore(other_key, topic).read() == {}, "sealed with a key not configured: skipped"


def dead_letter(**fields: Any) -> RangeRecord:
    values: dict[str, str | int | None] = {
        H.SUBSCRIPTION: "crm",
        H.GROUP: "group-that-failed",
        H.ATTEMPT: 7,
        H.ORIGIN_TOPIC: "users",
        H.ORIGIN_PARTITION: 2,
        H.ORIGIN_OFFSET: 99,
        H.ORIGIN_TIMESTAMP: 1_700_000_000_000,
        H.FIRST_ATTEMPT: 1_600_000_000_000,
        H.EVENT_ID: "e-1",
        H.REASON: "retries exhausted",
        **fields,
    }
    headers: Headers = [("traceparent", TRACEPARENT), *H.encode(values)]
    return RangeRecord("fanout.dlq", 0, 5, 1_700_000_100_000, b"key", b'{"event":"x"}', headers)


class MemoryWriter:
    def __init__(self) -> None:
        self.written: list[tuple[str, bytes | None, bytes | None, Headers]] = []
        self.finished = False

    @property
    def acked(self) -> int:
        return len(self.written)

    def write(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
        self.written.append((topic, value, key, headers))

    def serve(self) -> None:
        pass

    def finish(self) -> None:
        self.finished = True


def test_both_replays_write_retry_records_for_this_group_through_one_writer() -> None:
    settings = Settings()
    out = MemoryWriter()
    writer = ReplayWriter(settings, out)
    assert writer.dead_letter(dead_letter())
    assert not writer.dead_letter(dead_letter(**{H.SUBSCRIPTION: None})), "a poison record's dead letter"
    assert not writer.dead_letter(dead_letter(**{H.VALUE_DROPPED: 2_000_000})), "written without its value"
    source = RangeRecord(
        "users", 3, 41, 1_700_000_000_500, b"u-1", b'{"event":"user.created","id":"evt-7"}', []
    )
    event = replays._routed(source, RoutingTable.build([make_sub(id="crm", topics=["users"])]))
    assert event is not None and event.id == "evt-7"
    writer.source(source, "crm", event)
    assert [w[0] for w in out.written] == [settings.topics.retry(0)] * 2
    (_, dl_value, dl_key, dl_headers), (_, src_value, src_key, src_headers) = out.written
    replayed, routed = H.RetryMeta.parse(dl_headers), H.RetryMeta.parse(src_headers)
    for meta in (replayed, routed):
        assert (meta.subscription, meta.group, meta.attempt) == ("crm", settings.dispatcher.group_id, 0)
        assert meta.first_attempt > 1_700_000_000, "max_age counts from the replay"
    assert (replayed.event_id, replayed.origin_topic, replayed.origin_offset) == ("e-1", "users", 99)
    assert (dl_value, dl_key, H.original(dl_headers)) == (
        b'{"event":"x"}',
        b"key",
        [("traceparent", TRACEPARENT)],
    )
    assert (routed.event_id, routed.origin_topic, routed.origin_partition, routed.origin_offset) == (
        "evt-7",
        "users",
        3,
        41,
    )
    assert (src_value, src_key) == (source.value, source.key)
    writer.finish()
    assert out.finished


def test_a_source_replay_routes_with_the_one_subscription_and_skips_what_does_not_decode() -> None:
    table = RoutingTable.build([make_sub(id="crm", topics=["users"], events=["user.*"])])

    def record(value: bytes) -> RangeRecord:
        return RangeRecord("users", 0, 1, 1_700_000_000_000, None, value, [])

    assert replays._routed(record(b'{"event":"user.created","data":{}}'), table) is not None
    assert replays._routed(record(b'{"event":"order.created","data":{}}'), table) is None
    assert replays._routed(record(b"not json"), table) is None


class FlakyStore(HistoryStore):
    def __init__(self, path: Path, fail: list[Exception]) -> None:
        super().__init__(path, 3600)
        self.fail = fail
        self.rebuilt: list[str] = []

    def ingest(self, values: Sequence[bytes | None], positions: Any) -> Any:
        if self.fail:
            raise self.fail.pop(0)
        return super().ingest(values, positions)

    def rebuild(self, reason: str) -> None:
        self.rebuilt.append(reason)
        super().rebuild(reason)


def test_the_history_indexer_keeps_batches_and_asks_to_read_again_when_it_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_indexer, "WRITE_RETRY", 0.25)
    store = FlakyStore(
        tmp_path / "h.sqlite", [sqlite3.OperationalError("disk full"), IndexCorrupt("bad page")]
    )
    indexer = HistoryIndexer(Settings(), store)
    store.open()
    try:
        batch = TailBatch([b"junk", b"junk"], {0: 10, 3: 4})
        with pytest.raises(ReadAgain) as again:
            indexer.take(batch)
        assert (again.value.delay, again.value.reset) == (0.25, None), "read again later from the index"
        assert indexer.starts() == {}
        with pytest.raises(ReadAgain) as again:
            indexer.take(batch)
        assert again.value.reset is not None and store.rebuilt == []
        again.value.reset()
        assert store.rebuilt == ["bad page"], "the index is rebuilt when the tail starts over"
        indexer.take(batch)
        assert indexer.starts() == {0: 10, 3: 4} and store.skipped == 2
        store.needs_rebuild = True
        with pytest.raises(ReadAgain) as again:
            indexer.take(TailBatch())
        assert again.value.reset is not None
    finally:
        store.close()
