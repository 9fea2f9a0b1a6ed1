"""The Settler: which outcome becomes which record, what is counted, what the ops topic hears.

The fakes here (``FakeSink``, ``Harness``...) are shared by the other pipeline tests. The retry policy's
arithmetic is in ``test_retry_policy``, the records' headers in ``test_records``, the hand-off of refused
records in ``test_handoff``.
"""

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
from fanout.model.errors import EndpointGone, NotAttempted, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery, Headers
from fanout.model.subscription import Subscription
from fanout.pipeline.counts import DISABLED_REASON
from fanout.pipeline.lanes import Spilled
from fanout.pipeline.offsets import PartitionTracker
from fanout.pipeline.ops import DEAD_LETTERED, FAILING, OpsEvents
from fanout.pipeline.records import RecordTopics, RecordWriter
from fanout.pipeline.settle import Settler
from fanout.runtime import wiring
from tests.unit.factories import make_delivery, make_event, make_sub

RETRY = ("fx.retry.0", "fx.retry.1", "fx.retry.2")
DLQ = "fx.dlq"
OPS = "fx.ops"
GROUP = "fanout-dispatcher"
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

    def produce_then(
        self, topic: str, value: bytes, key: bytes | None, done: Callable[[Exception | None], None]
    ) -> None:
        """``AsyncProducer.produce_then``: ``done`` hears how the record's future ended."""
        future = self.produce(topic, value, key, [])
        future.add_done_callback(lambda f: None if f.cancelled() else done(f.exception()))

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
    """A Settler over a ``FakeSink``, built from ``settings`` as the runtime builds it (by default the
    tiers ``RETRY``: 1 s, 5 s, 30 s; failing after 3 consecutive failures)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings = settings or make_settings()
        self.sink = FakeSink()
        self.gone: list[Delivery] = []
        self.failing: list[tuple[Delivery, int]] = []
        self.settler = Settler(
            wiring.retry_policy(settings),
            RecordWriter(self.sink, wiring.record_topics(settings), settings.dispatcher.group_id),
            OpsEvents(self.sink, settings.topics.ops),
            settings.delivery.failing_after,
            on_gone=self.gone.append,
            on_failing=lambda d, n: self.failing.append((d, n)),
        )
        self.counts = self.settler.counts
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


def never_attempted(h: Harness, waited: float, spilled: str = "") -> Delivery:
    d = h.delivery()
    d.first_attempt, d.received, d.spilled = 0.0, time.time() - waited, spilled
    return d


def test_the_retry_topics_must_match_the_tiers() -> None:
    writer = RecordWriter(FakeSink(), RecordTopics(RETRY[:2], DLQ), GROUP)
    policy = wiring.retry_policy(make_settings())
    with pytest.raises(ValueError, match="3 retry tiers but 2 retry topics"):
        Settler(policy, writer, OpsEvents(FakeSink(), OPS), 3, on_gone=lambda d: None)


# -- success ------------------------------------------------------------------------------------


async def test_success_releases_the_ticket_and_produces_nothing() -> None:
    h = Harness()
    d = h.delivery()
    assert not h.settled(d)
    h.settler.done(d, None, 0.05)
    assert h.settled(d)
    assert h.tracker.committable() == 101
    assert h.sink.records == []
    assert h.counts.outcomes == {("hook-1", "delivered"): 1}
    assert h.counts.totals() == {"delivered": 1}


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
    assert (d.attempt, d.last_error) == (attempt_before + 1, "HTTP 503")
    headers = record.fanout
    assert headers[H.ATTEMPT] == str(attempt_before + 1)
    assert before_ms + delay * 1000 <= int(headers[H.NOT_BEFORE]) <= after_ms + delay * 1000
    assert headers[H.LAST_ERROR] == "HTTP 503" and headers[H.STATUS] == "503"
    assert H.REASON not in headers
    assert h.counts.outcomes == {("hook-1", "retried"): 1}
    assert h.counts.totals() == {"retried": 1}


async def test_retry_after_raises_the_delay() -> None:
    h = Harness()
    d = h.delivery()
    now_ms = time.time() * 1000
    h.settler.done(d, RetryableDelivery("HTTP 429", 429, retry_after=20), 0.1)
    (record,) = h.sink.records
    assert record.topic == RETRY[2]  # 20 s: the 30 s tier, not the scheduled 1 s one
    assert int(record.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(20_000, abs=1_000)


async def test_the_first_failed_attempt_starts_max_age() -> None:
    h = Harness()
    d = never_attempted(h, waited=7200)
    before = time.time()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    meta = H.RetryMeta.parse(h.sink.records[0].headers)
    assert meta.first_attempt >= before - 0.001 and meta.attempt == 1
    assert meta.spilled == ""  # a retry after an attempt, not a spill


async def test_ticket_is_released_only_when_the_broker_acknowledges() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    (record,) = h.sink.records
    assert not h.settled(d)
    record.ack()
    await until(lambda: h.settled(d))
    assert h.tracker.committable() == d.event.offset + 1


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
    assert h.counts.dead_letters == {("hook-1", "retries_exhausted"): 1}
    assert h.counts.totals() == {"dead_lettered": 1}
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
    assert h.counts.dead_letters == {("hook-1", "max_age_exceeded"): 1}


async def test_subscription_schedule_overrides_the_default() -> None:
    h = Harness()
    d = h.delivery(sub=make_sub(retry={"schedule": [30]}))
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.records[0].topic == RETRY[2]
    d2 = h.delivery(sub=make_sub(retry={"schedule": [30]}), attempt=1)
    h.settler.done(d2, RetryableDelivery("HTTP 503", 503), 0.1)
    assert h.sink.to(DLQ)[0].fanout[H.REASON] == "retries exhausted"


async def test_permanent_failure_goes_to_the_dlq_at_once() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, PermanentDelivery("HTTP 400", 400), 0.1)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "permanent failure: HTTP 400"
    assert dead.fanout[H.STATUS] == "400"
    assert dead.fanout[H.ATTEMPT] == "1"
    assert h.sink.to(*RETRY) == []
    assert h.counts.dead_letters == {("hook-1", "permanent_failure"): 1}


async def test_endpoint_gone_disables_and_dead_letters() -> None:
    h = Harness()
    d = h.delivery()
    h.settler.done(d, EndpointGone("HTTP 410", 410), 0.1)
    assert h.gone == [d]
    (dead,) = h.sink.to(DLQ)
    assert "endpoint gone" in dead.fanout[H.REASON]
    assert "subscription disabled" in dead.fanout[H.REASON]
    assert dead.fanout[H.STATUS] == "410"
    assert h.counts.dead_letters == {("hook-1", "endpoint_gone"): 1}


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
    h.settler.dead_letter(d, DISABLED_REASON)
    assert [r.topic for r in h.sink.records] == [DLQ]
    assert h.sink.records[0].fanout[H.REASON] == "subscription disabled"
    assert H.STATUS not in h.sink.records[0].fanout
    assert h.counts.dead_letters == {("hook-1", "subscription_disabled"): 1}


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
    assert h.counts.totals() == {"spilled": 5}
    assert h.counts.outcomes == {("hook-1", "spilled"): 5}


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
    assert h.counts.outcomes == {("hook-1", "dead_lettered"): 1}


async def test_waiting_on_fanouts_pace_is_not_charged_to_max_age() -> None:
    h = Harness()  # max_age 3600 s
    d = never_attempted(h, waited=7200)  # spilled, never attempted, for two hours
    h.settler.done(d, Spilled("rate limited", retry_after=2.0), 0.0)
    (record,) = h.sink.records
    assert record.topic == RETRY[1]
    assert H.FIRST_ATTEMPT not in record.fanout  # max_age has not started
    assert H.RetryMeta.parse(record.headers).spilled == "rate limited"


async def test_a_delivery_never_attempted_within_max_pending_is_dead_lettered() -> None:
    h = Harness(make_settings(max_pending=600))
    d = never_attempted(h, waited=601)
    h.settler.spill(d, "circuit open", 30.0)
    (dead,) = h.sink.to(DLQ)
    assert dead.fanout[H.REASON] == "circuit open: not attempted within 600s"
    assert H.FIRST_ATTEMPT not in dead.fanout
    assert h.counts.dead_letters == {("hook-1", "circuit_open"): 1}


async def test_a_spill_comes_back_when_its_lane_said_and_no_later_than_the_longest_tier() -> None:
    h = Harness()
    now_ms = time.time() * 1000
    h.settler.spill(h.delivery(), "rate limited", 12.5)
    h.settler.spill(h.delivery(), "rate limited", 10_000.0)
    h.settler.spill(h.delivery(), "lane full")
    first, second, third = h.sink.records
    assert first.topic == RETRY[2] and int(first.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(
        12_500, abs=500
    )
    assert second.topic == RETRY[2] and int(second.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(
        30_000, abs=500
    )
    assert third.topic == RETRY[0] and int(third.fanout[H.NOT_BEFORE]) - now_ms == pytest.approx(
        1_000, abs=500
    )


async def test_a_delivery_spilled_again_is_counted() -> None:
    h = Harness()
    h.settler.spill(never_attempted(h, waited=1), "lane full", 1.0)
    h.settler.spill(never_attempted(h, waited=1, spilled="rate limited"), "circuit open", 1.0)
    assert h.counts.totals() == {"spilled": 2, "respilled": 1}


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
    assert h.counts.totals() == {"fenced": 2}
    assert h.counts.outcomes == {}


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


async def test_poison_records_are_dead_lettered_and_counted_without_a_subscription() -> None:
    h = Harness()
    tracker = PartitionTracker("orders", 4, epoch=1)
    ticket = tracker.track(77)
    h.settler.poison(FakeRecord(), "not valid JSON: unexpected character", ticket)
    (dead,) = h.sink.records
    assert dead.topic == DLQ
    assert dead.fanout[H.REASON] == "poison record: not valid JSON: unexpected character"
    assert h.counts.dead_letters == {("", "poison"): 1}
    assert h.counts.outcomes == {}
    assert h.counts.totals() == {"poison": 1}
    dead.ack()
    await until(lambda: tracker.committable() == 78)


# -- key-ordered lanes settle through the same Settler ------------------------------------------


async def test_an_ordered_delivery_without_a_connection_slot_is_tried_again_in_place_uncounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Key-ordered deliveries never spill; a pool timeout (``NotAttempted``) is tried again shortly,
    with no attempt counted and no retry record written."""
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
    assert h.sink.records == [] and h.counts.totals() == {"not_attempted": 1, "delivered": 1}


async def test_an_ordered_delivery_retried_in_place_counts_as_retried_but_not_through_a_tier() -> None:
    from fanout.pipeline.ordered import KeyedLane

    h = Harness(make_settings(schedule=[0.01]))
    calls = 0

    async def send(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryableDelivery("HTTP 503", 503)

    lane = KeyedLane(make_sub(ordering="key"), send, h.settler, 1.0)
    delivery = h.delivery()
    lane.offer(delivery)
    await until(lambda: h.settled(delivery))
    assert h.sink.records == []
    assert h.counts.outcomes == {("hook-1", "retried"): 1, ("hook-1", "delivered"): 1}
    assert h.counts.totals() == {"retried_in_place": 1, "delivered": 1}
