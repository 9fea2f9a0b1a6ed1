"""Hand-offs the broker does not take: which produce errors are final, the backoff for the others, the
dead letter without value for a refused record, and the producer's record limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError

from fanout.config import KafkaSettings, RetrySettings, Settings, TopicSettings
from fanout.kafka.producer import QUEUE_KBYTES, produce_error
from fanout.kafka.topics import HEADER_ROOM_BYTES, LIBRDKAFKA_MAX_MESSAGE_BYTES, size_producer
from fanout.model import headers as H
from fanout.model.errors import ProduceFailed, RecordRefused, RecordTooLarge, RetryableDelivery
from fanout.pipeline.counts import reason_kind
from fanout.pipeline.handoff import Backoff
from fanout.pipeline.offsets import PartitionTracker
from tests.unit.factories import make_sub
from tests.unit.test_settle import DLQ, RETRY, SOURCE_HEADERS, FakeRecord, Harness, until

# -- which produce errors are final ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, RecordTooLarge),  # local check and the broker's MESSAGE_TOO_LARGE
        (KafkaError.RECORD_LIST_TOO_LARGE, RecordTooLarge),
        (KafkaError.INVALID_RECORD, RecordRefused),
        (KafkaError._MSG_TIMED_OUT, ProduceFailed),
        (KafkaError.NOT_ENOUGH_REPLICAS, ProduceFailed),
        (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ProduceFailed),
        (KafkaError.LEADER_NOT_AVAILABLE, ProduceFailed),
        (KafkaError.REQUEST_TIMED_OUT, ProduceFailed),
        (KafkaError._TRANSPORT, ProduceFailed),
        (KafkaError._ALL_BROKERS_DOWN, ProduceFailed),
        (KafkaError._QUEUE_FULL, ProduceFailed),
        (KafkaError._UNKNOWN_TOPIC, ProduceFailed),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, ProduceFailed),
        (KafkaError._PURGE_QUEUE, ProduceFailed),
        (KafkaError._FATAL, ProduceFailed),
    ],
)
def test_only_refusals_of_the_record_itself_are_final(code: int, kind: type[ProduceFailed]) -> None:
    error = produce_error(KafkaError(code))
    assert type(error) is kind
    assert str(error) == KafkaError(code).str()


def test_a_fatal_client_error_is_never_final_whatever_its_code() -> None:
    error = produce_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True))
    assert type(error) is ProduceFailed


# -- backoff for retriable failures ------------------------------------------------------------


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, cap=15.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 15, 15, 15]
    assert backoff.delay(10_000) == 15  # no overflow after a long outage
    assert backoff.delay(0) == 0.5


def test_backoff_jitter_stays_within_its_bounds_and_varies() -> None:
    backoff = Backoff(first=1.0, cap=4.0, jitter=0.2)
    first = [backoff.delay(1) for _ in range(200)]
    capped = [backoff.delay(50) for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in first) and len(set(first)) > 1
    assert all(3.2 <= d <= 4.8 for d in capped)


@dataclass(frozen=True, slots=True)
class RecordingBackoff(Backoff):
    calls: list[int] = field(default_factory=list)

    def delay(self, failures: int) -> float:
        self.calls.append(failures)
        return 0.0


async def test_retriable_failures_retry_the_same_record_with_a_growing_backoff() -> None:
    h = Harness()
    backoff = RecordingBackoff()
    h.settler.writer.backoff = backoff
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    for n, error in enumerate(
        [ProduceFailed("Local: Message timed out"), ProduceFailed("Local: Fatal error"), RuntimeError("x")],
        start=1,
    ):
        h.sink.records[-1].fail(error)
        await until(lambda n=n: len(h.sink.records) == n + 1)  # type: ignore[misc]
        assert not h.settled(d)
    assert backoff.calls == [1, 2, 3]
    assert {(r.topic, r.value, tuple(r.headers)) for r in h.sink.records} == {
        (h.sink.records[0].topic, h.sink.records[0].value, tuple(h.sink.records[0].headers))
    }
    assert h.sink.records[0].topic == RETRY[0]
    assert h.counts.events == {"hand_off_errors": 3}
    h.sink.records[-1].ack()
    await until(lambda: h.settled(d))


# -- refused records: dead letter without the value --------------------------------------------


async def test_a_retry_too_large_becomes_a_dead_letter_without_its_value() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 500", 500), 0.1)
    (retry,) = h.sink.records
    assert retry.topic == RETRY[0] and H.NOT_BEFORE in retry.fanout
    retry.fail(RecordTooLarge("Broker: Message size too large"))
    await until(lambda: len(h.sink.records) == 2)
    dead = h.sink.records[1]
    assert dead.topic == DLQ
    assert dead.value is None and dead.key == d.event.key
    assert dead.fanout == {
        H.SUBSCRIPTION: d.subscription.id,
        H.ATTEMPT: "1",
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: str(d.event.partition),
        H.ORIGIN_OFFSET: str(d.event.offset),
        H.ORIGIN_TIMESTAMP: retry.fanout[H.ORIGIN_TIMESTAMP],
        H.FIRST_ATTEMPT: retry.fanout[H.FIRST_ATTEMPT],
        H.EVENT_ID: d.event.id,
        H.LAST_ERROR: "HTTP 500",
        H.STATUS: "500",
        H.REASON: "record too large",
        H.VALUE_DROPPED: str(len(d.event.value or b"")),
        H.GROUP: retry.fanout[H.GROUP],
    }
    assert H.original(dead.headers) == SOURCE_HEADERS
    assert H.replay_of_dead_letter(dead.headers, "g", 0) is None  # nothing to replay without the value
    assert not h.settled(d)
    dead.ack()
    await until(lambda: h.settled(d))
    assert h.counts.dead_letters == {(d.subscription.id, "record_too_large"): 1}
    assert h.counts.events == {"hand_off_refused": 1}
    assert h.counts.outcomes == {(d.subscription.id, "retried"): 1}
    assert reason_kind(dead.fanout[H.REASON]) == "record_too_large"


async def test_a_dead_letter_refused_for_another_reason_keeps_the_error_as_its_reason() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.dead_letter(d, "permanent failure: HTTP 400", 400)
    h.sink.to(DLQ)[0].fail(RecordRefused("Broker: Broker failed to validate record"))
    await until(lambda: len(h.sink.to(DLQ)) == 2)
    dead = h.sink.to(DLQ)[1]
    assert dead.value is None
    assert dead.fanout[H.REASON] == "record refused: Broker: Broker failed to validate record"
    assert dead.fanout[H.STATUS] == "400" and dead.fanout[H.SUBSCRIPTION] == d.subscription.id
    assert h.counts.dead_letters == {
        (d.subscription.id, "permanent_failure"): 1,  # the dead letter, then its refusal
        (d.subscription.id, "record_refused"): 1,
    }


async def test_when_the_dead_letter_without_value_is_refused_too_only_fanouts_headers_are_kept() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.dead_letter(d, "retries exhausted")
    h.sink.to(DLQ)[0].fail(RecordTooLarge("Local: Message size too large"))
    await until(lambda: len(h.sink.to(DLQ)) == 2)
    h.sink.to(DLQ)[1].fail(RecordTooLarge("Broker: Message size too large"))  # e.g. huge source headers
    await until(lambda: len(h.sink.to(DLQ)) == 3)
    last = h.sink.to(DLQ)[2]
    assert (last.key, last.value) == (None, None)
    assert H.original(last.headers) == []
    assert last.fanout[H.REASON] == "record too large"
    assert last.fanout[H.VALUE_DROPPED] == str(len(d.event.value or b""))
    assert last.fanout[H.ORIGIN_OFFSET] == str(d.event.offset)
    assert h.counts.dead_letters[(d.subscription.id, "record_too_large")] == 1  # one dead letter
    assert h.counts.events == {"hand_off_refused": 2}
    last.ack()
    await until(lambda: h.settled(d))


async def test_a_record_refused_at_its_smallest_is_dropped_counted_and_released() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.dead_letter(d, "retries exhausted")
    for n in range(1, 4):
        h.sink.to(DLQ)[-1].fail(RecordTooLarge("Broker: Message size too large"))
        if n < 3:
            await until(lambda n=n: len(h.sink.to(DLQ)) == n + 1)  # type: ignore[misc]
    await until(lambda: h.settled(d))  # released: the partition moves on
    assert len(h.sink.to(DLQ)) == 3
    assert h.counts.events == {"hand_off_refused": 2, "hand_off_dropped": 1}
    await asyncio.sleep(0)
    assert len(h.sink.records) == 3 + 1  # and the dead-lettered ops event; nothing else is written


async def test_a_poison_record_too_large_keeps_its_origin() -> None:
    h = Harness()
    tracker = PartitionTracker("orders", 4, epoch=1)
    ticket = tracker.track(77)
    h.settler.poison(FakeRecord(_value=b"x" * 5000, _headers=[("tenant", b"acme")]), "not valid JSON", ticket)
    (first,) = h.sink.records
    first.fail(RecordTooLarge("Local: Message size too large"))
    await until(lambda: len(h.sink.records) == 2)
    dead = h.sink.records[1]
    assert dead.value is None and dead.key == b"k1"
    assert dead.fanout == {
        H.REASON: "record too large",
        H.VALUE_DROPPED: "5000",
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: "4",
        H.ORIGIN_OFFSET: "77",
        H.ORIGIN_TIMESTAMP: "1714564800000",
        H.GROUP: "fanout-dispatcher",
    }
    assert H.original(dead.headers) == [("tenant", b"acme")]
    dead.ack()
    await until(lambda: tracker.committable() == 78)
    assert h.counts.dead_letters == {("", "poison"): 1, ("", "record_too_large"): 1}


async def test_a_refusal_of_a_fenced_ticket_writes_nothing() -> None:
    h = Harness()
    d = h.delivery(sub=make_sub())
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    h.tracker.close()
    record = h.sink.records[0]
    handled = asyncio.Event()
    record.future.add_done_callback(lambda _: handled.set())
    record.fail(RecordTooLarge("Broker: Message size too large"))
    await handled.wait()
    assert len(h.sink.records) == 1 and h.counts.events == {}


# -- the producer's record limit ----------------------------------------------------------------

SETTINGS = Settings(
    kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
    topics=TopicSettings(prefix="fx"),
    retry=RetrySettings(tiers=[1, 5, 30]),
)
INTERNAL = [SETTINGS.topics.retry(i) for i in range(3)] + [SETTINGS.topics.dlq]
DEFAULT = SETTINGS.kafka.message_max_bytes


def test_the_producer_takes_whatever_a_source_topic_takes_plus_room_for_headers() -> None:
    limits = {**dict.fromkeys(INTERNAL, DEFAULT + HEADER_ROOM_BYTES), "big": 8 << 20, "small": 1 << 20}
    sizing = size_producer(SETTINGS, limits, ["big", "small", "missing"])
    assert sizing.message_max_bytes == (8 << 20) + HEADER_ROOM_BYTES
    (warning,) = sizing.warnings
    assert "big" in warning and str(8 << 20) in warning and "without their value" in warning


def test_the_producer_takes_what_the_internal_topics_take_without_warnings_when_they_fit() -> None:
    limits = {**dict.fromkeys(INTERNAL, 6 << 20), "orders": 6 << 20}
    sizing = size_producer(SETTINGS, limits, ["orders"])
    assert sizing.message_max_bytes == (6 << 20) + HEADER_ROOM_BYTES and sizing.warnings == ()
    assert size_producer(SETTINGS, {}, ["orders"]).message_max_bytes == DEFAULT
    smaller = size_producer(SETTINGS, {**dict.fromkeys(INTERNAL, 1 << 20), "orders": 1 << 19}, ["orders"])
    assert smaller.message_max_bytes == DEFAULT and smaller.warnings == ()


def test_the_producer_limit_stays_within_what_librdkafka_accepts() -> None:
    sizing = size_producer(SETTINGS, {"huge": 2_000_000_000}, ["huge"])
    assert sizing.message_max_bytes == LIBRDKAFKA_MAX_MESSAGE_BYTES


def test_the_producer_queue_holds_two_records_of_the_limit() -> None:
    """librdkafka refuses a record larger than its local queue as "queue full", forever."""
    default = size_producer(SETTINGS, {}, []).config()
    assert default == {"message.max.bytes": DEFAULT, "queue.buffering.max.kbytes": QUEUE_KBYTES}
    big = size_producer(SETTINGS, {"big": 100 << 20}, ["big"]).config()
    assert big["message.max.bytes"] == (100 << 20) + HEADER_ROOM_BYTES
    assert big["queue.buffering.max.kbytes"] * 1024 >= 2 * big["message.max.bytes"]
