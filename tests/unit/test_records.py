"""The records settle writes: the retry/dead-letter header contract (``fanout.model.headers``), poison
dead letters, and the hand-off of each (released on acknowledgement, a failed produce tried again)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fanout.model import headers as H
from fanout.model.event import Delivery
from fanout.pipeline.handoff import Backoff
from fanout.pipeline.offsets import PartitionTracker
from fanout.pipeline.records import RecordTopics, RecordWriter
from tests.unit.factories import make_delivery, make_event, make_sub
from tests.unit.test_settle import DLQ, GROUP, RETRY, SOURCE_HEADERS, FakeRecord, FakeSink, until


class Writes:
    def __init__(self) -> None:
        self.sink = FakeSink()
        self.writer = RecordWriter(self.sink, RecordTopics(RETRY, DLQ), GROUP)
        self.tracker = PartitionTracker("orders", 0, epoch=1)

    def delivery(self, attempt: int = 1, first_attempt: float | None = None, offset: int = 100) -> Delivery:
        event = make_event(offset=offset, headers=list(SOURCE_HEADERS))
        ticket = self.tracker.track(offset)
        d = make_delivery(make_sub(), event, ticket, attempt=attempt, first_attempt=first_attempt)
        d.last_error = "HTTP 503"
        return d


def test_a_writer_needs_a_retry_topic() -> None:
    with pytest.raises(ValueError, match="retry tier"):
        RecordWriter(FakeSink(), RecordTopics((), DLQ), GROUP)


async def test_a_retry_record_carries_the_header_contract() -> None:
    w = Writes()
    d = w.delivery(attempt=2)
    d.received = d.first_attempt - 5
    before_ms = int(time.time() * 1000)
    w.writer.retry(d, 1, 5.0, "", 503)
    after_ms = int(time.time() * 1000)
    (record,) = w.sink.records
    assert record.topic == RETRY[1]
    assert record.key == d.event.key and record.value == d.event.value
    headers = record.fanout
    assert before_ms + 5000 <= int(headers.pop(H.NOT_BEFORE)) <= after_ms + 5000
    assert headers == {
        H.SUBSCRIPTION: "hook-1",
        H.GROUP: GROUP,
        H.ATTEMPT: "2",
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: "0",
        H.ORIGIN_OFFSET: "100",
        H.ORIGIN_TIMESTAMP: str(int(d.event.time * 1000)),
        H.FIRST_ATTEMPT: str(int(d.first_attempt * 1000)),
        H.RECEIVED: str(int(d.received * 1000)),
        H.EVENT_ID: d.event.id,
        H.LAST_ERROR: "HTTP 503",
        H.STATUS: "503",
    }
    assert H.original(record.headers) == SOURCE_HEADERS  # traceparent kept


async def test_a_retry_record_parses_back_for_the_next_attempt() -> None:
    w = Writes()
    d = w.delivery(attempt=2)
    d.last_error = "timeout after 15s"
    w.writer.retry(d, 0, 1.0, "", None)
    meta = H.RetryMeta.parse(w.sink.records[0].headers)
    assert (meta.subscription, meta.attempt, meta.event_id, meta.group) == ("hook-1", 2, d.event.id, GROUP)
    assert (meta.origin_topic, meta.origin_partition, meta.origin_offset) == ("orders", 0, 100)
    assert meta.last_error == "timeout after 15s" and meta.spilled == ""
    assert meta.first_attempt == pytest.approx(d.first_attempt, abs=0.001)
    assert H.STATUS not in w.sink.records[0].fanout  # no status for a timeout


async def test_a_spill_record_says_why_and_has_no_first_attempt_until_one_was_made() -> None:
    w = Writes()
    d = w.delivery(attempt=0, first_attempt=0.0)
    d.last_error, d.received = "", time.time() - 7200
    w.writer.retry(d, 1, 2.0, "rate limited", None)
    (record,) = w.sink.records
    assert record.fanout[H.REASON] == "rate limited"
    assert H.FIRST_ATTEMPT not in record.fanout and H.LAST_ERROR not in record.fanout
    assert int(record.fanout[H.RECEIVED]) == int(d.received * 1000)
    meta = H.RetryMeta.parse(record.headers)
    assert meta.first_attempt == 0.0 and meta.spilled == "rate limited"
    assert meta.received == pytest.approx(d.received, abs=0.001)


async def test_a_dead_letter_carries_its_reason_and_status_and_no_not_before() -> None:
    w = Writes()
    d = w.delivery(attempt=4)
    w.writer.dead_letter(d, "retries exhausted", 503)
    (dead,) = w.sink.records
    assert dead.topic == DLQ
    assert (dead.key, dead.value) == (d.event.key, d.event.value)
    assert dead.fanout[H.REASON] == "retries exhausted" and dead.fanout[H.STATUS] == "503"
    assert dead.fanout[H.ATTEMPT] == "4" and dead.fanout[H.GROUP] == GROUP
    assert H.NOT_BEFORE not in dead.fanout
    assert H.original(dead.headers) == SOURCE_HEADERS
    w.writer.dead_letter(w.delivery(offset=101), "subscription disabled", None)
    assert H.STATUS not in w.sink.records[1].fanout


async def test_poison_records_are_dead_lettered_as_they_came_with_the_reason() -> None:
    w = Writes()
    tracker = PartitionTracker("orders", 4, epoch=1)
    ticket = tracker.track(77)
    record = FakeRecord(_headers=[("tenant", b"acme"), (H.ATTEMPT, b"forged")])
    w.writer.poison(record, "not valid JSON: unexpected character", ticket)
    (dead,) = w.sink.records
    assert dead.topic == DLQ
    assert (dead.key, dead.value) == (b"k1", b"not json")
    assert dead.fanout == {
        H.REASON: "poison record: not valid JSON: unexpected character",
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: "4",
        H.ORIGIN_OFFSET: "77",
        H.ORIGIN_TIMESTAMP: "1714564800000",
        H.GROUP: GROUP,
    }
    assert H.original(dead.headers) == [("tenant", b"acme")]  # a forged fanout header is not kept
    assert tracker.committable() == 77
    dead.ack()
    await until(lambda: tracker.committable() == 78)


# -- hand-off -----------------------------------------------------------------------------------


async def test_the_ticket_is_released_only_when_the_broker_acknowledges() -> None:
    w = Writes()
    d = w.delivery()
    w.writer.retry(d, 0, 1.0, "", 503)
    assert w.tracker.committable() == 100
    w.sink.records[0].ack()
    await until(lambda: w.tracker.committable() == 101)


async def test_a_failed_produce_is_tried_again_and_only_then_released() -> None:
    w = Writes()
    w.writer.backoff = Backoff(first=0.0, cap=0.0)
    d = w.delivery()
    w.writer.dead_letter(d, "retries exhausted", 503)
    first = w.sink.records[0]
    first.fail(RuntimeError("broker unavailable"))
    await until(lambda: len(w.sink.records) == 2)
    second = w.sink.records[1]
    assert (second.topic, second.key, second.value, second.headers) == (
        first.topic,
        first.key,
        first.value,
        first.headers,
    )
    assert w.tracker.committable() == 100
    assert w.writer.counts.events == {"hand_off_errors": 1}
    second.ack()
    await until(lambda: w.tracker.committable() == 101)


async def test_a_failed_produce_of_a_fenced_ticket_is_dropped() -> None:
    w = Writes()
    w.writer.backoff = Backoff(first=0.0, cap=0.0)
    w.writer.retry(w.delivery(), 0, 1.0, "", 503)
    w.tracker.close()
    record = w.sink.records[0]
    handled = asyncio.Event()
    record.future.add_done_callback(lambda _: handled.set())  # runs after the writer's callback
    record.fail(RuntimeError("broker unavailable"))
    await handled.wait()
    assert w.writer.counts.events == {}  # counted just before a retry is scheduled
    assert len(w.sink.records) == 1
