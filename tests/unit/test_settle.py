from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from fanout.config import DeliverySettings, KafkaSettings, RetrySettings, Settings, TopicSettings
from fanout.model import headers as H
from fanout.model.errors import EndpointGone, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery, Headers
from fanout.model.subscription import Subscription
from fanout.pipeline import settle as settle_module
from fanout.pipeline.handoff import Backoff
from fanout.pipeline.lanes import Spilled
from fanout.pipeline.offsets import PartitionTracker
from fanout.pipeline.ops import DEAD_LETTERED, FAILING, OpsEvents
from fanout.pipeline.settle import Settler
from tests.unit.factories import make_delivery, make_event, make_sub

RETRY = ("fx.retry.0", "fx.retry.1", "fx.retry.2")
DLQ = "fx.dlq"
OPS = "fx.ops"
SOURCE_HEADERS: Headers = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


@dataclass
class Produced:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    future: asyncio.Future[None]

    @property
    def fanout(self) -> dict[str, str]:
        return H.as_dict(self.headers)

    @property
    def body(self) -> Any:
        assert self.value is not None
        return orjson.loads(self.value)

    def ack(self) -> None:
        self.future.set_result(None)

    def fail(self, error: Exception) -> None:
        self.future.set_exception(error)


class FakeSink:
    """A RecordSink whose futures the test resolves: acknowledged, or failed."""

    def __init__(self) -> None:
        self.records: list[Produced] = []

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.records.append(Produced(topic, value, key, list(headers), future))
        return future

    def to(self, *topics: str) -> list[Produced]:
        return [r for r in self.records if r.topic in topics]

    def ack_all(self) -> None:
        for record in self.records:
            if not record.future.done():
                record.ack()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


def make_settings(**retry: Any) -> Settings:
    retry_values: dict[str, Any] = {"tiers": [1, 5, 30], "schedule": [1, 5, 30], "jitter": 0, "max_age": 3600}
    retry_values.update(retry)
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
        topics=TopicSettings(prefix="fx"),
        retry=RetrySettings(**retry_values),
        delivery=DeliverySettings(failing_after=3, retry_after_max=60),
    )


class Harness:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or make_settings()
        self.sink = FakeSink()
        self.gone: list[Delivery] = []
        self.failing: list[tuple[Delivery, int]] = []
        self.settler = Settler(
            self.settings,
            self.sink,
            OpsEvents(self.sink, self.settings.topics.ops),
            on_gone=self.gone.append,
            on_failing=lambda d, n: self.failing.append((d, n)),
        )
        self.tracker = PartitionTracker("orders", 0, epoch=1)
        self._offset = 100

    def delivery(
        self,
        sub: Subscription | None = None,
        attempt: int = 0,
        age: float = 0.0,
        topic: str = "orders",
    ) -> Delivery:
        offset = self._offset
        self._offset += 1
        event = make_event(topic=topic, offset=offset, headers=list(SOURCE_HEADERS))
        return make_delivery(
            sub or make_sub(),
            event,
            self.tracker.track(offset),
            attempt=attempt,
            first_attempt=time.time() - age,
        )

    def settled(self, delivery: Delivery) -> bool:
        return self.tracker.committable() != delivery.event.offset


def ops_types(sink: FakeSink) -> list[str]:
    return [r.body["event"] for r in sink.to(OPS)]


# -- success ------------------------------------------------------------------------------------


async def test_success_releases_the_ticket_and_produces_nothing() -> None:
    h = Harness()
    d = h.delivery()
    assert not h.settled(d)
    h.settler.done(d, None, 0.05)
    assert h.settled(d)
    assert h.tracker.committable() == 101
    assert h.sink.records == []
    assert h.settler.stats["delivered"] == 1


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt_before", "topic", "delay"), [(0, RETRY[0], 1), (1, RETRY[1], 5), (2, RETRY[2], 30)]
)
async def test_retryable_failure_goes_to_the_tier_of_its_scheduled_delay(
    attempt_before: int, topic: str, delay: float
) -> None:
    h = Harness()
    d = h.delivery(attempt=attempt_before)
    before_ms = int(time.time() * 1000)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    after_ms = int(time.time() * 1000)
    (record,) = h.sink.records
    assert record.topic == topic
    assert record.key == d.event.key and record.value == d.event.value
    headers = record.fanout
    assert headers[H.ATTEMPT] == str(attempt_before + 1)
    assert before_ms + delay * 1000 <= int(headers[H.NOT_BEFORE]) <= after_ms + delay * 1000
    assert headers[H.SUBSCRIPTION] == "hook-1"
    assert headers[H.ORIGIN_TOPIC] == "orders"
    assert headers[H.ORIGIN_PARTITION] == "0"
    assert headers[H.ORIGIN_OFFSET] == str(d.event.offset)
    assert headers[H.ORIGIN_TIMESTAMP] == str(int(d.event.time * 1000))
    assert headers[H.FIRST_ATTEMPT] == str(int(d.first_attempt * 1000))
    assert headers[H.EVENT_ID] == d.event.id
    assert headers[H.LAST_ERROR] == "HTTP 503"
    assert headers[H.STATUS] == "503"
    assert H.REASON not in headers
    assert H.original(record.headers) == SOURCE_HEADERS  # traceparent kept
    assert h.settler.stats["retried"] == 1


async def test_retry_record_parses_back_for_the_next_attempt() -> None:
    h = Harness()
    d = h.delivery(attempt=1)
    h.settler.done(d, RetryableDelivery("timeout after 15s"), 15.0)
    meta = H.RetryMeta.parse(h.sink.records[0].headers)
    assert (meta.subscription, meta.attempt, meta.event_id) == ("hook-1", 2, d.event.id)
    assert meta.group == h.settings.dispatcher.group_id, "only the group that wrote it consumes it"
    assert (meta.origin_topic, meta.origin_partition, meta.origin_offset) == ("orders", 0, d.event.offset)
    assert meta.last_error == "timeout after 15s"
    assert meta.first_attempt == pytest.approx(d.first_attempt, abs=0.001)
    assert H.STATUS not in h.sink.records[0].fanout  # no status for a timeout


async def test_ticket_is_released_only_when_the_broker_acknowledges() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    (record,) = h.sink.records
    assert not h.settled(d)
    record.ack()
    await until(lambda: h.settled(d))
    assert h.tracker.committable() == d.event.offset + 1


async def test_a_failed_produce_is_tried_again_and_only_then_released() -> None:
    h = Harness()
    h.settler.hand_off_backoff = Backoff(first=0.0, cap=0.0)
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    first = h.sink.records[0]
    first.fail(RuntimeError("broker unavailable"))
    await until(lambda: len(h.sink.records) == 2)
    second = h.sink.records[1]
    assert (second.topic, second.key, second.value, second.headers) == (
        first.topic,
        first.key,
        first.value,
        first.headers,
    )
    assert not h.settled(d)
    assert h.settler.stats["hand_off_errors"] == 1
    second.ack()
    await until(lambda: h.settled(d))


async def test_a_failed_produce_of_a_fenced_ticket_is_dropped() -> None:
    h = Harness()
    h.settler.hand_off_backoff = Backoff(first=0.0, cap=0.0)
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    h.tracker.close()
    record = h.sink.records[0]
    handled = asyncio.Event()
    record.future.add_done_callback(lambda _: handled.set())  # runs after the settler's callback
    record.fail(RuntimeError("broker unavailable"))
    await handled.wait()
    assert h.settler.stats["hand_off_errors"] == 0  # counted just before a retry is scheduled
    assert len(h.sink.records) == 1


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0, 0), (0.5, 0), (1, 0), (1.001, 1), (5, 1), (5.5, 2), (30, 2), (31, 2), (10_000, 2)],
)
def test_tier_for_picks_the_smallest_tier_at_least_the_delay(delay: float, tier: int) -> None:
    settler = Settler(make_settings(), FakeSink(), OpsEvents(FakeSink(), OPS), on_gone=lambda d: None)
    assert settler.tier_for(delay) == tier


async def test_jitter_stays_within_bounds() -> None:
    h = Harness(make_settings(schedule=[100], jitter=0.2, tiers=[50, 100, 200]))
    dues = []
    for _ in range(20):
        now_ms = time.time() * 1000
        h.settler.done(h.delivery(), RetryableDelivery("HTTP 500", 500), 0.1)
        record = h.sink.to("fx.retry.0", "fx.retry.1", "fx.retry.2")[-1]
        due = int(record.fanout[H.NOT_BEFORE]) - now_ms
        assert 80_000 - 50 <= due <= 120_000 + 50
        if due < 99_900:
            assert record.topic == "fx.retry.1"
        elif due > 100_100:
            assert record.topic == "fx.retry.2"
        dues.append(due)
    assert max(dues) - min(dues) > 1_000  # jitter is applied


async def test_retry_after_raises_the_delay() -> None:
    h = Harness()
    d = h.delivery()
    now_ms = time.time() * 1000
    h.settler.done(d, RetryableDelivery("HTTP 429", 429, retry_after=20), 0.1)
    (record,) = h.sink.records
    assert record.topic == RETRY[2]  # 20 s: the 30 s tier, not the scheduled 1 s one
    assert int(record.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(20_000, abs=1_000)


async def test_retry_after_is_clamped_by_retry_after_max() -> None:
    h = Harness()
    d = h.delivery()
    now_ms = time.time() * 1000
    h.settler.done(d, RetryableDelivery("HTTP 503", 503, retry_after=86_400), 0.1)
    (record,) = h.sink.records
    assert record.topic == RETRY[2]  # the last tier
    assert int(record.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(60_000, abs=1_000)


async def test_a_shorter_retry_after_does_not_shorten_the_schedule() -> None:
    h = Harness()
    d = h.delivery(attempt=2)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503, retry_after=0), 0.1)
    assert h.sink.records[0].topic == RETRY[2]


async def test_subscription_schedule_overrides_the_default() -> None:
    h = Harness()
    d = h.delivery(sub=make_sub(retry={"schedule": [30]}))
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.records[0].topic == RETRY[2]
    d2 = h.delivery(sub=make_sub(retry={"schedule": [30]}), attempt=1)
    h.settler.done(d2, RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.to(DLQ)[0].fanout[H.REASON] == "retries exhausted"


# -- dead letters -----------------------------------------------------------------------------


async def test_exhausted_schedule_goes_to_the_dlq() -> None:
    h = Harness()
    d = h.delivery(attempt=3)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "retries exhausted"
    assert dead.fanout[H.ATTEMPT] == "4"
    assert dead.fanout[H.STATUS] == "503"
    assert dead.fanout[H.LAST_ERROR] == "HTTP 503"
    assert H.NOT_BEFORE not in dead.fanout
    assert dead.value == d.event.value and dead.key == d.event.key
    assert h.settler.dead_letter_reasons["retries exhausted"] == 1
    assert not h.settled(d)
    dead.ack()
    await until(lambda: h.settled(d))


async def test_max_age_exceeded_goes_to_the_dlq() -> None:
    h = Harness()
    d = h.delivery(age=3599.5)  # the next 1 s retry would be due after max_age (3600 s)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "max age exceeded"
    assert h.sink.to(*RETRY) == []


async def test_subscription_max_age_overrides_the_default() -> None:
    h = Harness()
    d = h.delivery(sub=make_sub(retry={"max_age": 10}), age=20)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.to(DLQ)[0].fanout[H.REASON] == "max age exceeded"


async def test_permanent_failure_goes_to_the_dlq_at_once() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, PermanentDelivery("HTTP 400", 400), 0.1)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "permanent failure: HTTP 400"
    assert dead.fanout[H.STATUS] == "400"
    assert dead.fanout[H.ATTEMPT] == "1"
    assert h.sink.to(*RETRY) == []


async def test_endpoint_gone_disables_and_dead_letters() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, EndpointGone("HTTP 410", 410), 0.1)
    assert h.gone == [d]
    (dead,) = h.sink.to(DLQ)
    assert "endpoint gone" in dead.fanout[H.REASON]
    assert "subscription disabled" in dead.fanout[H.REASON]
    assert dead.fanout[H.STATUS] == "410"


async def test_dead_letters_emit_an_ops_event() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, PermanentDelivery("HTTP 422", 422), 0.1)
    (ops,) = h.sink.to(OPS)
    assert ops.key == b"hook-1"
    assert ops.body["event"] == DEAD_LETTERED
    assert ops.body["data"] == {
        "subscription": "hook-1",
        "event_id": d.event.id,
        "event_type": d.event.type,
        "reason": "permanent failure: HTTP 422",
        "attempts": 1,
        "last_error": "HTTP 422",
    }


async def test_disabled_subscription_dead_letter_emits_no_ops_event() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.dead_letter(d, settle_module.DISABLED_REASON)
    assert [r.topic for r in h.sink.records] == [DLQ]
    assert h.sink.records[0].fanout[H.REASON] == "subscription disabled"
    assert H.STATUS not in h.sink.records[0].fanout


# -- failing subscriptions and the ops topic ---------------------------------------------------


async def test_consecutive_failures_emit_exactly_one_failing_event() -> None:
    h = Harness()
    for _ in range(6):
        h.settler.done(h.delivery(), RetryableDelivery("HTTP 503", 503), 0.1)
    failing = [r for r in h.sink.to(OPS) if r.body["event"] == FAILING]
    assert len(failing) == 1
    assert failing[0].body["data"] == {
        "subscription": "hook-1",
        "url": "https://hooks.example.com/in",
        "consecutive_failures": 3,
        "last_error": "HTTP 503",
    }
    assert [n for _, n in h.failing] == [3]


async def test_a_success_resets_the_failure_count() -> None:
    h = Harness()
    for _ in range(2):
        h.settler.done(h.delivery(), RetryableDelivery("HTTP 503", 503), 0.1)
    h.settler.done(h.delivery(), None, 0.1)
    for _ in range(2):
        h.settler.done(h.delivery(), RetryableDelivery("HTTP 503", 503), 0.1)
    assert FAILING not in ops_types(h.sink)
    h.settler.done(h.delivery(), PermanentDelivery("HTTP 400", 400), 0.1)  # permanent failures count too
    assert ops_types(h.sink).count(FAILING) == 1


async def test_failures_are_counted_per_subscription() -> None:
    h = Harness()
    a, b = make_sub(id="a"), make_sub(id="b")
    for sub in (a, b, a, b):
        h.settler.done(h.delivery(sub=sub), RetryableDelivery("HTTP 503", 503), 0.1)
    assert FAILING not in ops_types(h.sink)
    h.settler.done(h.delivery(sub=a), RetryableDelivery("HTTP 503", 503), 0.1)
    assert [r.key for r in h.sink.to(OPS)] == [b"a"]


async def test_deliveries_of_ops_events_emit_no_ops_events() -> None:
    h = Harness()
    for _ in range(5):
        h.settler.done(h.delivery(topic=OPS), RetryableDelivery("HTTP 503", 503), 0.1)
    h.settler.done(h.delivery(topic=OPS), PermanentDelivery("HTTP 400", 400), 0.1)
    h.settler.done(h.delivery(topic=OPS, attempt=3), RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.to(OPS) == []
    assert len(h.sink.to(DLQ)) == 2
    assert len(h.failing) == 1  # the callback still learns about it


# -- spills ---------------------------------------------------------------------------------------


async def test_a_spill_is_not_an_attempt() -> None:
    h = Harness()
    for _ in range(5):
        h.settler.done(h.delivery(attempt=1), Spilled("lane full"), 0.0)
    assert h.sink.to(OPS) == []
    record = h.sink.records[0]
    assert record.topic == RETRY[0]
    assert record.fanout[H.REASON] == "lane full"
    assert record.fanout[H.ATTEMPT] == "1"
    assert H.STATUS not in record.fanout
    assert h.settler.stats["spilled"] == 5 and h.settler.stats["retried"] == 0


async def test_circuit_open_spill_goes_to_the_tier_of_the_cooldown() -> None:
    h = Harness()
    d = h.delivery()
    now_ms = time.time() * 1000
    h.settler.done(d, Spilled("circuit open", retry_after=25.0), 0.0)
    (record,) = h.sink.records
    assert record.topic == RETRY[2]
    assert record.fanout[H.REASON] == "circuit open"
    assert int(record.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(25_000, abs=1_000)


async def test_a_spill_past_max_age_is_dead_lettered_with_the_spill_reason() -> None:
    h = Harness()
    d = h.delivery(age=3600)
    h.settler.spill(d, "rate limited")
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "rate limited"
    assert h.sink.to(*RETRY) == []
    assert ops_types(h.sink) == [DEAD_LETTERED]


def never_attempted(h: Harness, waited: float, spilled: str = "") -> Delivery:
    d = h.delivery()
    d.first_attempt, d.received, d.spilled = 0.0, time.time() - waited, spilled
    return d


async def test_waiting_on_fanouts_pace_is_not_charged_to_max_age() -> None:
    h = Harness()  # max_age 3600 s
    d = never_attempted(h, waited=7200)  # spilled, never attempted, for two hours
    h.settler.done(d, Spilled("rate limited", retry_after=2.0), 0.0)
    (record,) = h.sink.records
    assert record.topic == RETRY[1]
    assert H.FIRST_ATTEMPT not in record.fanout  # max_age has not started
    assert int(record.fanout[H.RECEIVED]) == int(d.received * 1000)
    meta = H.RetryMeta.parse(record.headers)
    assert meta.first_attempt == 0.0 and meta.spilled == "rate limited"
    assert meta.received == pytest.approx(d.received, abs=0.001)


async def test_a_delivery_never_attempted_within_max_pending_is_dead_lettered() -> None:
    h = Harness(make_settings(max_pending=600))
    d = never_attempted(h, waited=601)
    h.settler.spill(d, "circuit open", 30.0)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "circuit open: not attempted within 600s"
    assert H.FIRST_ATTEMPT not in dead.fanout
    assert h.settler.dead_letters[("hook-1", "circuit_open")] == 1


async def test_the_first_failed_attempt_starts_max_age() -> None:
    h = Harness()
    d = never_attempted(h, waited=7200)
    before = time.time()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    meta = H.RetryMeta.parse(h.sink.records[0].headers)
    assert meta.first_attempt >= before - 0.001 and meta.attempt == 1
    assert meta.spilled == ""  # a retry after an attempt, not a spill


async def test_a_spill_comes_back_when_its_lane_said_and_no_later_than_the_longest_tier() -> None:
    h = Harness()
    now_ms = time.time() * 1000
    h.settler.spill(h.delivery(), "rate limited", 12.5)
    h.settler.spill(h.delivery(), "rate limited", 10_000.0)
    first, second = h.sink.records
    assert first.topic == RETRY[2] and int(first.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(
        12_500, abs=500
    )
    assert second.topic == RETRY[2] and int(second.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(
        30_000, abs=500
    )


async def test_a_delivery_spilled_again_is_counted() -> None:
    h = Harness()
    h.settler.spill(never_attempted(h, waited=1), "lane full", 1.0)
    h.settler.spill(never_attempted(h, waited=1, spilled="rate limited"), "circuit open", 1.0)
    assert h.settler.stats["spilled"] == 2 and h.settler.stats["respilled"] == 1


async def test_spilled_delivery_is_released_when_acknowledged() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.spill(d, "lane full")
    assert not h.settled(d)
    h.sink.ack_all()
    await until(lambda: h.settled(d))


# -- fencing --------------------------------------------------------------------------------------


async def test_outcomes_of_fenced_deliveries_are_dropped() -> None:
    h = Harness()
    d1, d2, d3 = h.delivery(), h.delivery(), h.delivery()
    h.tracker.close()
    h.settler.done(d1, RetryableDelivery("HTTP 503", 503), 0.1)
    h.settler.done(d2, None, 0.1)
    h.settler.spill(d3, "lane full")
    h.settler.dead_letter(d3, "whatever")
    assert h.sink.records == []
    assert h.settler.stats["fenced"] == 2


# -- poison records ----------------------------------------------------------------------------


@dataclass
class FakeRecord:
    _value: bytes | None = b"not json"
    _headers: Headers | None = None

    def topic(self) -> str | None:
        return "orders"

    def partition(self) -> int | None:
        return 4

    def offset(self) -> int | None:
        return 77

    def key(self) -> bytes | None:
        return b"k1"

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_714_564_800_000)


async def test_poison_records_are_dead_lettered_with_the_reason() -> None:
    h = Harness()
    tracker = PartitionTracker("orders", 4, epoch=1)
    ticket = tracker.track(77)
    record = FakeRecord(_headers=[("tenant", b"acme"), (H.ATTEMPT, b"forged")])
    h.settler.poison(record, "not valid JSON: unexpected character", ticket)
    (dead,) = h.sink.records
    assert dead.topic == DLQ
    assert (dead.key, dead.value) == (b"k1", b"not json")
    assert dead.fanout == {
        H.REASON: "poison record: not valid JSON: unexpected character",
        H.ORIGIN_TOPIC: "orders",
        H.ORIGIN_PARTITION: "4",
        H.ORIGIN_OFFSET: "77",
        H.ORIGIN_TIMESTAMP: "1714564800000",
        H.GROUP: "fanout-dispatcher",
    }
    assert H.original(dead.headers) == [("tenant", b"acme")]
    assert h.settler.dead_letter_reasons["poison: not valid JSON"] == 1
    assert tracker.committable() == 77
    dead.ack()
    await until(lambda: tracker.committable() == 78)


async def test_an_ordered_delivery_without_a_connection_slot_is_tried_again_in_place_uncounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Key-ordered deliveries never spill; a pool timeout (``NotAttempted``) is tried again shortly,
    with no attempt counted and no retry record written."""
    from fanout.model.errors import NotAttempted
    from fanout.pipeline import ordered
    from fanout.pipeline.ordered import KeyedLane

    monkeypatch.setattr(ordered, "NOT_ATTEMPTED_DELAY", 0.01)
    h = Harness()
    attempts: list[int] = []

    async def send(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if len(attempts) == 1:
            raise NotAttempted("pool timeout: no connection slot within 5s")

    lane = KeyedLane(make_sub(ordering="key"), send, h.settler, 1.0)
    delivery = h.delivery()
    assert lane.offer(delivery) is None
    await until(lambda: h.settled(delivery))
    assert attempts == [0, 0] and delivery.attempt == 0
    assert h.sink.records == [] and h.settler.stats["not_attempted"] == 1
