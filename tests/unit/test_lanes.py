from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fanout.model.errors import DeliveryError, NotAttempted, PermanentDelivery, RetryableDelivery
from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline import flow as flow_module
from fanout.pipeline import lanes as lanes_module
from fanout.pipeline import limits as limits_module
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import Lane, LaneLimits, Spilled
from fanout.pipeline.limits import Breaker, TokenBucket
from fanout.pipeline.offsets import PartitionTracker
from tests.unit.factories import make_delivery, make_event, make_sub


class FakeClock:
    """Stands in for ``time`` in ``fanout.pipeline.lanes`` and ``.limits`` only (asyncio keeps its clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(lanes_module, "time", fake)
    monkeypatch.setattr(flow_module, "time", fake)
    monkeypatch.setattr(limits_module, "time", fake)
    return fake


class Gate:
    """A fake ``send``: every call waits until the test finishes it, and the gate counts concurrency."""

    def __init__(self) -> None:
        self.calls: list[Delivery] = []
        self._waiting: dict[Delivery, asyncio.Future[None]] = {}
        self.active = 0
        self.peak = 0

    async def __call__(self, delivery: Delivery) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls.append(delivery)
        self._waiting[delivery] = future
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await future
        finally:
            self.active -= 1

    def finish(self, delivery: Delivery, error: BaseException | None = None) -> None:
        future = self._waiting.pop(delivery)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    @property
    def waiting(self) -> list[Delivery]:
        return list(self._waiting)

    async def sending(self, delivery: Delivery) -> None:
        """Wait until ``delivery`` is the one send in progress."""
        await until(lambda: self.waiting == [delivery])


class Outcomes:
    """A recording ``on_done``."""

    def __init__(self) -> None:
        self.items: list[tuple[Delivery, DeliveryError | None]] = []

    def __call__(self, delivery: Delivery, error: DeliveryError | None, duration: float) -> None:
        assert duration >= 0
        self.items.append((delivery, error))

    def of(self, delivery: Delivery) -> list[DeliveryError | None]:
        return [e for d, e in self.items if d is delivery]

    async def reach(self, n: int) -> None:
        await until(lambda: len(self.items) == n)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the event loop run until ``predicate`` holds (a failure after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


def refusal(lane: Lane, delivery: Delivery) -> str | None:
    """Offer ``delivery``: None if the lane took it, else the reason it spilled."""
    refused = lane.offer(delivery)
    return None if refused is None else refused.error


def limits(**overrides: Any) -> LaneLimits:
    values: dict[str, Any] = {
        "queue_size": 100,
        "max_wait": 60.0,
        "breaker_failures": 3,
        "breaker_cooldown": 30.0,
    }
    values.update(overrides)
    return LaneLimits(**values)


def deliveries(sub: Subscription, n: int, tracker: PartitionTracker | None = None) -> list[Delivery]:
    tracker = tracker or PartitionTracker("orders", 0, epoch=1)
    return [make_delivery(sub, make_event(offset=i), tracker.track(i)) for i in range(n)]


def setup(
    sub: Subscription | None = None, send: Any = None, **limit_overrides: Any
) -> tuple[Lanes, Lane, Gate, Outcomes, Subscription]:
    sub = sub or make_sub()
    gate, outcomes = Gate(), Outcomes()
    lanes = Lanes(send or gate, outcomes, limits(**limit_overrides))
    return lanes, lanes.get(sub), gate, outcomes, sub


# -- TokenBucket ---------------------------------------------------------------------------------


def test_token_bucket_spends_its_capacity_then_reports_the_wait(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, capacity=3)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.1)  # asking again does not spend anything


def test_token_bucket_refills_at_its_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=4, capacity=1)
    assert bucket.take() == 0.0
    clock.advance(0.125)  # half a token
    assert bucket.take() == pytest.approx(0.125)
    clock.advance(0.125)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.25)


def test_token_bucket_capacity_caps_the_refill(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=100, capacity=2)
    bucket.take()
    bucket.take()
    clock.advance(3600)
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() > 0


def test_token_bucket_reconfigure_keeps_at_most_the_new_capacity(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, capacity=5)
    bucket.reconfigure(rate=1, capacity=1)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)


# -- Breaker -------------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = Breaker(threshold=3, cooldown=10)
    assert breaker.failure() is False
    assert breaker.failure() is False
    assert breaker.state == "closed" and breaker.sending()
    assert breaker.failure() is True
    assert breaker.state == "open"
    assert not breaker.sending()
    assert breaker.remaining() == pytest.approx(10)


def test_breaker_success_resets_the_count(clock: FakeClock) -> None:
    breaker = Breaker(threshold=3, cooldown=10)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"


def test_breaker_half_open_admits_exactly_one_probe(clock: FakeClock) -> None:
    breaker = Breaker(threshold=1, cooldown=10)
    breaker.failure()
    clock.advance(9.9)
    assert not breaker.sending()
    clock.advance(0.1)
    assert breaker.state == "half-open"
    assert breaker.remaining() == 0
    assert breaker.sending() is True
    assert breaker.state == "open"  # while the probe is out
    assert [breaker.sending() for _ in range(5)] == [False] * 5


def test_breaker_probe_success_closes(clock: FakeClock) -> None:
    breaker = Breaker(threshold=2, cooldown=10)
    breaker.failure()
    breaker.failure()
    clock.advance(10)
    assert breaker.sending()
    breaker.success()
    assert breaker.state == "closed"
    assert all(breaker.sending() for _ in range(3))


def test_breaker_probe_failure_reopens_for_a_full_cooldown(clock: FakeClock) -> None:
    breaker = Breaker(threshold=2, cooldown=10)
    breaker.failure()
    breaker.failure()
    clock.advance(10)
    assert breaker.sending()
    assert breaker.failure() is True
    assert breaker.state == "open"
    assert not breaker.sending()
    assert breaker.remaining() == pytest.approx(10)
    clock.advance(10)
    assert breaker.sending()


def test_breaker_accepting_does_not_reserve_the_probe_and_release_frees_it(clock: FakeClock) -> None:
    breaker = Breaker(threshold=1, cooldown=10)
    breaker.failure()
    assert not breaker.accepting()
    clock.advance(10)
    assert breaker.accepting() and breaker.accepting()  # asking twice reserves nothing
    assert breaker.sending()
    assert not breaker.accepting() and not breaker.sending()
    breaker.release()  # the probe ended without a verdict (e.g. refused before connecting)
    assert breaker.state == "half-open" and breaker.sending()


# -- Lane: in-flight cap -------------------------------------------------------------------------


async def test_in_flight_cap_is_never_exceeded() -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=3))
    batch = deliveries(sub, 10)
    assert all(lane.offer(d) is None for d in batch)
    await until(lambda: len(gate.calls) == 3)
    assert lane.in_flight == 3 and len(lane.queue) == 7 and lanes.queued == 7
    for finished in range(1, 11):
        gate.finish(gate.waiting[0])
        expected = min(3, 10 - finished)
        await outcomes.reach(finished)
        await until(lambda: gate.active == lane.in_flight)
        assert lane.in_flight == expected
    assert gate.peak == 3
    assert gate.calls == batch  # in order
    assert [d for d, _ in outcomes.items] == batch  # each reported exactly once
    assert all(error is None for _, error in outcomes.items)
    assert lane.idle and lanes.queued == 0 and lanes.in_flight() == 0


async def test_a_lane_holds_a_queue_only_while_it_queues() -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=1))
    other = lanes.get(make_sub(id="other"))
    idle = lanes_module._IDLE
    assert lane.queue is idle and other.queue is idle  # no deque of their own yet
    first, second, third, fourth = deliveries(sub, 4)
    assert all(lane.offer(d) is None for d in (first, second, third))
    await until(lambda: len(gate.calls) == 1)
    assert lane.queue is not idle and list(lane.queue) == [second, third] and not idle
    gate.finish(first)
    await until(lambda: len(gate.calls) == 2)
    gate.finish(second)
    await until(lambda: len(gate.calls) == 3)
    assert lane.queue is idle and not idle  # drained: its deque let go, the shared one still empty
    assert other.queue is idle and not other.queue
    gate.finish(third)
    await outcomes.reach(3)
    assert [d for d, _ in outcomes.items] == [first, second, third]
    assert lane.offer(fourth) is None and lane.queue is idle  # started at once: nothing queued
    await until(lambda: len(gate.calls) == 4)
    gate.finish(fourth)
    await outcomes.reach(4)
    assert lane.idle and not idle


async def test_send_errors_are_reported_and_a_crashing_sender_does_not_strand_the_delivery() -> None:
    async def send(delivery: Delivery) -> None:
        if delivery.event.offset == 0:
            raise PermanentDelivery("HTTP 400", 400)
        raise KeyError("bug")

    _, lane, _, outcomes, sub = setup(send=send)
    first, second = deliveries(sub, 2)
    lane.offer(first)
    lane.offer(second)
    await outcomes.reach(2)
    assert isinstance(outcomes.of(first)[0], PermanentDelivery)
    crashed = outcomes.of(second)[0]
    assert type(crashed) is RetryableDelivery and "internal error: KeyError" in crashed.error
    assert lane.in_flight == 0


# -- Lane: rate limit ----------------------------------------------------------------------------


async def test_rate_limit_configures_the_bucket_from_the_subscription_and_share() -> None:
    lanes, lane, _, _, _ = setup(make_sub(rate_limit={"per_second": 50, "burst": 4}))
    assert lane.bucket is not None
    assert (lane.bucket.rate, lane.bucket.capacity) == (50, 4)
    lanes.set_shares(lambda s: 0.5)
    assert (lane.bucket.rate, lane.bucket.capacity) == (25, 2)
    lanes.set_shares(lambda s: 0.1)
    assert (lane.bucket.rate, lane.bucket.capacity) == pytest.approx((5, 1))  # at least one token
    other = lanes.get(make_sub(id="late", rate_limit={"per_second": 10}))
    assert other.bucket is not None and other.bucket.rate == pytest.approx(1)  # joins at the current share


async def test_lane_without_rate_limit_has_no_bucket() -> None:
    _, lane, _, _, _ = setup()
    assert lane.bucket is None


async def test_updating_the_subscription_reconfigures_the_lane() -> None:
    lanes, lane, _, _, _ = setup(make_sub(rate_limit={"per_second": 50}))
    newer = make_sub(version=1, rate_limit={"per_second": 5, "burst": 2})
    assert lanes.get(newer) is lane
    assert lane.sub is newer
    assert lane.bucket is not None and (lane.bucket.rate, lane.bucket.capacity) == (5, 2)
    unlimited = make_sub(version=2)
    lanes.get(unlimited)
    assert lane.bucket is None


async def test_rate_limit_spaces_sends() -> None:
    sent_at: list[float] = []

    async def send(delivery: Delivery) -> None:
        sent_at.append(time.monotonic())

    _, lane, _, outcomes, sub = setup(make_sub(rate_limit={"per_second": 50, "burst": 1}), send=send)
    for d in deliveries(sub, 5):
        assert lane.offer(d) is None
    await outcomes.reach(5)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert all(gap >= 0.019 for gap in gaps), gaps  # 1/50 s per token, never faster
    assert lane.rate_waits >= 4


async def test_a_rate_limited_lane_queues_what_its_tokens_start_within_max_wait(clock: FakeClock) -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(rate_limit={"per_second": 1, "burst": 1}), max_wait=3.0)
    batch = deliveries(sub, 7)
    try:
        assert [refusal(lane, d) for d in batch[:4]] == [None] * 4  # one sent (the token), 3 s of tokens
        refused = [lane.offer(d) for d in batch[4:]]
        assert all(r is not None and r.error == "rate limited" for r in refused)
        assert len(lane.queue) == 3 and lanes.queued == 3
        # Each comes back at its own slot, a token (1 s) apart, a quarter of max_wait early.
        assert [r.retry_after for r in refused if r is not None] == pytest.approx([3.25, 4.25, 5.25])
        await until(lambda: len(gate.calls) == 1)
        assert lane.close() == batch[1:4]
        assert lanes.queued == 0
        assert refusal(lane, batch[4]) == "lane closed"
    finally:
        gate.finish(batch[0])
        await outcomes.reach(1)


async def test_a_delivery_back_from_a_spill_is_taken_beyond_max_wait(clock: FakeClock) -> None:
    gate, outcomes = Gate(), Outcomes()
    lanes = Lanes(gate, outcomes, limits(queue_size=4, max_wait=3.0))
    sub = make_sub(rate_limit={"per_second": 1, "burst": 1})
    lane = lanes.get(sub)
    batch = deliveries(sub, 10)
    try:
        assert [refusal(lane, d) for d in batch[:5]] == [None, None, None, None, "rate limited"]
        for d in batch[4:]:
            d.spilled = "rate limited"  # they come back: their not-before time was their slot
        # Taken up to twice the queue's bound rather than spilled again.
        assert [refusal(lane, d) for d in batch[4:]] == [None] * 5 + ["rate limited"]
        assert len(lane.queue) == 8
        lanes.expire()
        # Past its bound the lane holds fetching although it does not keep up (the pace they were
        # scheduled at was too optimistic: fewer of them should be fetched).
        assert not lane.keeps_up() and lanes.held and lane in lanes.congested
    finally:
        lane.close()
        await until(lambda: len(gate.calls) == 1)
        gate.finish(batch[0])
        await outcomes.reach(1)


# -- Lane: full queue, breaker -------------------------------------------------------------------


async def test_offer_reports_lane_full_when_in_flight_and_queue_are_full() -> None:
    lanes, lane, gate, _, sub = setup(make_sub(max_in_flight=1), queue_size=2)
    batch = deliveries(sub, 4)
    assert [refusal(lane, d) for d in batch] == [None, None, None, "lane full"]
    await until(lambda: len(gate.calls) == 1)
    assert lanes.queued == 2 and list(lane.queue) == batch[1:3]
    lanes.remove(sub.id)


async def test_breaker_opens_spills_the_queue_and_refuses_offers(clock: FakeClock) -> None:
    lanes, lane, gate, outcomes, sub = setup(
        make_sub(max_in_flight=1, rate_limit={"per_second": 1, "burst": 4}),
        breaker_failures=2,
        breaker_cooldown=30,
        max_wait=1.0,
    )
    d1, d2, d3, d4, d5 = deliveries(sub, 5)
    for d in (d1, d2, d3, d4):
        assert lane.offer(d) is None
    await gate.sending(d1)
    gate.finish(d1, RetryableDelivery("HTTP 503", 503))
    await gate.sending(d2)
    gate.finish(d2, RetryableDelivery("HTTP 503", 503))
    await outcomes.reach(4)
    assert [d for d, _ in outcomes.items] == [d1, d3, d4, d2]
    first, second = (outcomes.of(spilled)[0] for spilled in (d3, d4))
    assert isinstance(first, Spilled) and isinstance(second, Spilled)
    assert first.error == second.error == "circuit open"
    # Due when the cool-down ends, then spread at the lane's pace (a token a second; a quarter of
    # max_wait early), not all at once.
    assert first.retry_after == pytest.approx(30)
    assert second.retry_after == pytest.approx(30.75)
    assert lane.breaker.state == "open"
    late = lane.offer(d5)
    assert late is not None and late.error == "circuit open"
    assert late.retry_after == pytest.approx(31.75)
    assert lanes.queued == 0 and gate.calls == [d1, d2]


async def test_permanent_failures_do_not_open_the_breaker() -> None:
    _, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=1), breaker_failures=2)
    batch = deliveries(sub, 4)
    for d in batch[:3]:
        lane.offer(d)
    for d in batch[:3]:
        await gate.sending(d)
        gate.finish(d, PermanentDelivery("HTTP 400", 400))
    await outcomes.reach(3)
    assert lane.breaker.state == "closed"
    assert lane.offer(batch[3]) is None
    await gate.sending(batch[3])
    gate.finish(batch[3])


async def test_a_pool_timeout_spills_and_leaves_the_breaker_alone(clock: FakeClock) -> None:
    """No connection slot in time (``NotAttempted``) is backpressure: spilled like a full lane, not a
    failure the breaker counts (two of them here would open a breaker of threshold 2)."""
    _, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=1), breaker_failures=2)
    batch = deliveries(sub, 3)
    for d in batch:
        assert lane.offer(d) is None
    for d in batch[:2]:
        await gate.sending(d)
        gate.finish(d, NotAttempted("pool timeout: no connection slot within 5s"))
    await gate.sending(batch[2])
    assert lane.breaker.state == "closed" and lane.breaker.failures == 0
    gate.finish(batch[2], RetryableDelivery("HTTP 503", 503))
    await outcomes.reach(3)
    for d in batch[:2]:
        (error,) = outcomes.of(d)
        assert isinstance(error, Spilled) and error.error.startswith("pool timeout")
    assert lane.breaker.failures == 1, "only the real attempt counts"


async def test_a_pool_timeout_during_a_probe_frees_the_probe(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=4), breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    probe, then = (make_delivery(sub, make_event(offset=o), tracker.track(o)) for o in (10, 11))
    clock.advance(30)
    assert lane.offer(probe) is None
    await gate.sending(probe)
    gate.finish(probe, NotAttempted("pool timeout"))
    await until(lambda: len(outcomes.of(probe)) == 1)
    assert lane.offer(then) is None, "the endpoint was not contacted: another probe may go"
    await gate.sending(then)
    gate.finish(then)


async def open_breaker(lane: Lane, gate: Gate, sub: Subscription) -> PartitionTracker:
    tracker = PartitionTracker("orders", 1, epoch=1)
    for i in range(lane.breaker.threshold):
        d = make_delivery(sub, make_event(offset=i), tracker.track(i))
        assert lane.offer(d) is None
        await gate.sending(d)
        gate.finish(d, RetryableDelivery("HTTP 503", 503))
        await until(lambda: lane.in_flight == 0)
    assert lane.breaker.state == "open"
    return tracker


async def test_half_open_lane_sends_one_probe_and_closes_on_success(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=4), breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    probe, waiting = (make_delivery(sub, make_event(offset=o), tracker.track(o)) for o in (10, 11))
    clock.advance(30)
    assert lane.offer(probe) is None
    assert lane.offer(waiting) is None  # queued behind the probe, not spilled again
    await gate.sending(probe)
    assert list(lane.queue) == [waiting]  # only one probe while half-open
    gate.finish(probe)
    await until(lambda: outcomes.of(probe) == [None])
    assert lane.breaker.state == "closed"
    await gate.sending(waiting)
    gate.finish(waiting)


async def test_a_failed_probe_spills_what_queued_behind_it(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=4), breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    probe, waiting = (make_delivery(sub, make_event(offset=o), tracker.track(o)) for o in (10, 11))
    clock.advance(30)
    assert lane.offer(probe) is None and lane.offer(waiting) is None
    await gate.sending(probe)
    gate.finish(probe, RetryableDelivery("HTTP 503", 503))
    await until(lambda: len(outcomes.of(waiting)) == 1)
    spilled = outcomes.of(waiting)[0]
    assert isinstance(spilled, Spilled) and spilled.error == "circuit open"
    assert spilled.retry_after == pytest.approx(lane.breaker.remaining())  # the doubled cool-down
    assert gate.calls[-1] is probe


async def test_half_open_probe_failure_reopens(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    clock.advance(30)
    probe = make_delivery(sub, make_event(offset=10), tracker.track(10))
    assert lane.offer(probe) is None
    await gate.sending(probe)
    gate.finish(probe, RetryableDelivery("HTTP 502", 502))
    await until(lambda: len(outcomes.of(probe)) == 1)
    assert lane.breaker.state == "open"
    assert lane.breaker.remaining() == pytest.approx(30)
    assert refusal(lane, make_delivery(sub, make_event(offset=11), tracker.track(11))) == "circuit open"


async def test_half_open_probe_answered_with_a_permanent_error_does_not_wedge_the_breaker(
    clock: FakeClock,
) -> None:
    _, lane, gate, outcomes, sub = setup(breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    clock.advance(30)
    probe = make_delivery(sub, make_event(offset=10), tracker.track(10))
    assert lane.offer(probe) is None
    await gate.sending(probe)
    gate.finish(probe, PermanentDelivery("HTTP 400", 400))  # the endpoint answered: it is up
    await until(lambda: len(outcomes.of(probe)) == 1)
    clock.advance(3600)
    assert lane.offer(make_delivery(sub, make_event(offset=11), tracker.track(11))) is None


async def test_half_open_probe_that_crashes_the_sender_does_not_wedge_the_breaker(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(breaker_failures=2, breaker_cooldown=30)
    tracker = await open_breaker(lane, gate, sub)
    clock.advance(30)
    probe = make_delivery(sub, make_event(offset=10), tracker.track(10))
    assert lane.offer(probe) is None
    await gate.sending(probe)
    gate.finish(probe, RuntimeError("sender bug"))
    await until(lambda: len(outcomes.of(probe)) == 1)
    clock.advance(3600)
    assert lane.offer(make_delivery(sub, make_event(offset=11), tracker.track(11))) is None


async def test_half_open_probe_that_is_never_sent_does_not_wedge_the_breaker(clock: FakeClock) -> None:
    _, lane, gate, _outcomes, sub = setup(
        make_sub(rate_limit={"per_second": 1 / 30.1, "burst": 1}),
        breaker_failures=1,
        breaker_cooldown=30,
        max_wait=5,
    )
    revoked = PartitionTracker("orders", 3, epoch=1)
    failing, later = deliveries(sub, 2)
    probe = make_delivery(sub, make_event(offset=7), revoked.track(7))
    try:
        assert lane.offer(failing) is None  # spends the only token
        await gate.sending(failing)
        gate.finish(failing, RetryableDelivery("HTTP 503", 503))
        await until(lambda: lane.in_flight == 0 and lane.breaker.state == "open")
        clock.advance(30)
        assert lane.offer(probe) is None  # after the cool-down, queued until its token (0.1 s later)
        revoked.close()  # its partition is revoked before the token comes: it is dropped, never sent
        clock.advance(0.2)
        await until(lambda: not lane.queue)
        assert lane.offer(later) is None
        await gate.sending(later)  # the probe is free for the next one
        assert gate.calls == [failing, later]
        gate.finish(later)
        await until(lambda: lane.breaker.state == "closed")
    finally:
        lane.close()


# -- Lane: expiry and fencing --------------------------------------------------------------------


async def test_lanes_scan_their_queues_for_expiry_every_quarter_of_max_wait(clock: FakeClock) -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=1), max_wait=4.0)
    first, queued = deliveries(sub, 2)
    try:
        lane.offer(first)
        lane.offer(queued)
        await gate.sending(first)
        clock.advance(3.5)
        lanes.expire()  # scans: nothing is old yet; the next scan is due a quarter of max_wait later
        clock.advance(0.6)  # ``queued`` is now older than max_wait, but no scan is due
        lanes.expire()
        assert outcomes.items == [] and list(lane.queue) == [queued]
        clock.advance(0.4)  # a quarter of max_wait after the last scan
        lanes.expire()
        assert [d for d, _ in outcomes.items] == [queued]
        assert isinstance(outcomes.of(queued)[0], Spilled)
    finally:
        lane.close()


async def test_a_stalled_endpoint_spills_what_it_cannot_start_within_max_wait(clock: FakeClock) -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=2), max_wait=1.0)
    batch = deliveries(sub, 7)
    for d in batch:
        assert lane.offer(d) is None  # latency unknown yet: all queued
    await until(lambda: len(gate.waiting) == 2)
    lane.expire(clock.now + 0.9)
    assert outcomes.items == []  # requests out for less than max_wait: nothing spills
    clock.advance(2.0)  # both requests out for 2 s: at most 2 per 2 s, one can start within max_wait
    lane.expire(clock.now)
    kept, spilled = batch[2:3], batch[3:]
    assert list(lane.queue) == kept and lanes.queued == 1
    assert [d for d, _ in outcomes.items] == spilled  # the newest, in queue order
    errors = [outcomes.of(d)[0] for d in spilled]
    assert all(isinstance(e, Spilled) and e.error == "endpoint slow" for e in errors)
    delays = [e.retry_after for e in errors if isinstance(e, Spilled)]
    # Due behind the kept one, a request per second apart (2 in flight, 2 s each), 0.25 s early.
    assert delays == pytest.approx([1.75, 2.75, 3.75, 4.75])
    lane.close()
    for d in gate.waiting:
        gate.finish(d)


async def test_a_lane_waiting_for_tokens_or_a_busy_loop_does_not_spill(clock: FakeClock) -> None:
    _, lane, gate, outcomes, sub = setup(
        make_sub(max_in_flight=1, rate_limit={"per_second": 1, "burst": 1}), max_wait=3.0
    )
    first, *queued = deliveries(sub, 4)
    for d in (first, *queued):
        assert lane.offer(d) is None  # the token, then 3 s of tokens
    await gate.sending(first)
    gate.finish(first)
    await outcomes.reach(1)
    lane.expire(clock.now + 60)  # long past max_wait, but nothing of the endpoint's is out
    assert list(lane.queue) == queued
    clock.advance(1.0)
    await gate.sending(queued[0])  # sent when its token came
    clock.advance(10)
    lane.expire(clock.now, lag=9.5)  # out for 10 s, of which the loop was 9.5 s late: not stalled
    assert list(lane.queue) == queued[1:] and len(outcomes.items) == 1
    lane.expire(clock.now)  # without that lag, the endpoint is stalled: what waits spills
    assert not lane.queue and [d for d, _ in outcomes.items[1:]] == queued[1:]
    gate.finish(queued[0])
    await outcomes.reach(4)


async def test_fenced_deliveries_are_dropped_not_sent() -> None:
    lanes, lane, gate, outcomes, sub = setup(make_sub(max_in_flight=1))
    revoked = PartitionTracker("orders", 0, epoch=1)
    d1, d2, d3 = deliveries(sub, 3, revoked)
    for d in (d1, d2, d3):
        lane.offer(d)
    await gate.sending(d1)
    revoked.close()
    gate.finish(d1)
    await until(lambda: lane.idle)
    assert gate.calls == [d1]
    assert [d for d, _ in outcomes.items] == [d1]  # d2 and d3 were dropped silently
    assert lanes.queued == 0


async def test_remove_returns_queued_deliveries_and_closes_the_lane() -> None:
    lanes, lane, gate, _, sub = setup(make_sub(max_in_flight=1))
    d1, d2, d3 = deliveries(sub, 3)
    for d in (d1, d2, d3):
        lane.offer(d)
    assert lanes.remove(sub.id) == [d2, d3]
    assert lanes.remove(sub.id) == []
    assert refusal(lane, d2) == "lane closed"
    assert lanes.get(sub) is not lane  # a fresh lane
    await gate.sending(d1)
    gate.finish(d1)


# -- Lanes: back-pressure ------------------------------------------------------------------------


class Pressure(threading.Event):
    """``Lanes.ready``, recording each clear (True: fetching held) and set (False: released) made on it."""

    def __init__(self) -> None:
        super().__init__()
        super().set()
        self.calls: list[bool] = []

    def set(self) -> None:
        self.calls.append(False)
        super().set()

    def clear(self) -> None:
        self.calls.append(True)
        super().clear()


def pressured(lanes: Lanes) -> Pressure:
    lanes.ready = Pressure()
    return lanes.ready


async def test_pressure_is_signalled_at_high_water_and_released_below_half() -> None:
    gate, outcomes = Gate(), Outcomes()
    lanes = Lanes(gate, outcomes, limits(), high_water=4)
    pressure = pressured(lanes)
    sub = make_sub(max_in_flight=1)
    lane = lanes.get(sub)
    batch = deliveries(sub, 6)
    for d in batch[:4]:
        lane.offer(d)  # the first is sent at once, three wait
    assert lanes.queued == 3 and pressure.calls == []
    lane.offer(batch[4])
    assert lanes.queued == 4 and pressure.calls == [True] and lanes.held and not lanes.ready.is_set()
    lane.offer(batch[5])
    assert lanes.queued == 5 and pressure.calls == [True]  # signalled once
    seen: list[tuple[int, list[bool]]] = []
    for d in batch:
        await gate.sending(d)
        seen.append((lanes.queued, list(pressure.calls)))
        gate.finish(d)
    assert seen[:5] == [(5, [True]), (4, [True]), (3, [True]), (2, [True, False]), (1, [True, False])]
    assert pressure.calls == [True, False] and not lanes.held and lanes.ready.is_set()


async def test_pressure_counts_every_lane() -> None:
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits(), high_water=4)
    pressure = pressured(lanes)
    a, b = lanes.get(make_sub(id="a", max_in_flight=1)), lanes.get(make_sub(id="b", max_in_flight=1))
    for lane in (a, b):
        for d in deliveries(lane.sub, 3):
            assert lane.offer(d) is None
    assert lanes.queued == 4 and pressure.calls == [True]
    assert lanes.in_flight() == 2
    assert len(a.close()) == 2
    assert lanes.queued == 2 and pressure.calls == [True, False]
    await until(lambda: len(gate.waiting) == 2)
    for d in gate.waiting:
        gate.finish(d)
    b.close()


async def test_a_lane_created_while_the_share_is_zero_does_not_crash_offer() -> None:
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits())
    lanes.set_shares(lambda s: 0.0)  # a member that owns no source partitions right now
    sub = make_sub(rate_limit={"per_second": 10})
    lane = lanes.get(sub)
    try:
        first, second = deliveries(sub, 2)
        assert lane.offer(first) is None
        assert refusal(lane, second) in (None, "rate limited")  # must queue (or refuse), not raise
    finally:
        lane.close()


def test_failed_probes_double_the_cooldown_up_to_the_maximum_and_success_resets_it(clock: FakeClock) -> None:
    breaker = Breaker(threshold=1, cooldown=2, max_cooldown=10)
    breaker.failure()
    assert breaker.remaining() == pytest.approx(2)
    waits = []
    for _ in range(4):
        clock.advance(breaker.remaining())
        assert breaker.sending()
        breaker.failure()
        waits.append(breaker.remaining())
    assert waits == pytest.approx([4, 8, 10, 10])
    clock.advance(10)
    assert breaker.sending()
    breaker.success()
    breaker.failure()
    assert breaker.remaining() == pytest.approx(2)


async def test_a_busy_but_young_lane_is_congested_and_holds_fetching_until_a_quarter() -> None:
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits(queue_size=8, max_wait=60.0))
    pressure = pressured(lanes)
    sub = make_sub(max_in_flight=1)
    lane = lanes.get(sub)
    batch = deliveries(sub, 6)
    for d in batch:
        assert lane.offer(d) is None  # one in flight, five queued
    assert pressure.calls == [True] and lanes.congested == {lane}  # half of 8 reached while young
    for d in batch[:3]:
        await gate.sending(d)
        gate.finish(d)
    await until(lambda: len(lane.queue) == 2)
    assert pressure.calls == [True, False] and not lanes.congested  # down to a quarter
    for d in batch[3:]:
        await gate.sending(d)
        gate.finish(d)


async def test_a_congested_lane_whose_endpoint_stalls_is_slow_not_congested(clock: FakeClock) -> None:
    gate, outcomes = Gate(), Outcomes()
    lanes = Lanes(gate, outcomes, limits(queue_size=8, max_wait=60.0))
    pressure = pressured(lanes)
    sub = make_sub(max_in_flight=1)
    lane = lanes.get(sub)
    batch = deliveries(sub, 6)
    for d in batch:
        lane.offer(d)
    assert pressure.calls == [True]
    await gate.sending(batch[0])
    clock.advance(45)
    lanes.expire()  # a queue waiting 45 s behind a request out for 45 s: still congested
    assert pressure.calls == [True] and lanes.congested == {lane}
    clock.advance(16)  # the request has been out for longer than max_wait: the endpoint is slow
    lanes.expire()
    assert pressure.calls == [True, False] and not lanes.congested
    assert [d for d, _ in outcomes.items] == batch[1:]  # its backlog spilled, to come back at its pace
    lane.close()
    gate.finish(batch[0])


async def test_a_slow_lane_filled_by_returning_deliveries_does_not_hold_fetching(clock: FakeClock) -> None:
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits(queue_size=8, max_wait=60.0))
    pressure = pressured(lanes)
    sub = make_sub(max_in_flight=1)
    lane = lanes.get(sub)
    lane.pace.latency = 20.0  # 20 s a request: three can start within max_wait
    batch = deliveries(sub, 6)
    assert [refusal(lane, d) for d in batch] == [None, None, None, None, "lane full", "lane full"]
    for d in batch[4:]:
        d.spilled = "lane full"
        assert lane.offer(d) is None  # coming back: taken, but the lane does not keep up with them
    assert len(lane.queue) == 5 and pressure.calls == [] and not lanes.congested
    lane.close()
    await gate.sending(batch[0])
    gate.finish(batch[0])


async def test_lanes_share_a_host_limit_and_wake_in_turn() -> None:
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits(), connections_per_host=2)
    a = lanes.get(make_sub(id="a", url="https://hooks.example.com/a"))
    b = lanes.get(make_sub(id="b", url="https://hooks.example.com:443/b"))
    other = lanes.get(make_sub(id="c", url="https://elsewhere.example.com/c"))
    for d in [*deliveries(a.sub, 3), *deliveries(b.sub, 2), *deliveries(other.sub, 1)]:
        lane = {"a": a, "b": b, "c": other}[d.subscription.id]
        assert lane.offer(d) is None
    await until(lambda: len(gate.waiting) == 3)  # two for hooks.example.com, one for elsewhere
    assert a.in_flight + b.in_flight == 2 and other.in_flight == 1
    assert lanes.slots.in_flight("https://hooks.example.com:443") == 2
    assert len(a.queue) + len(b.queue) == 3  # waiting in their queues, not as tasks
    assert len(lanes.tasks) == 3  # one task per request out, held by the registry
    for _ in range(6):
        await until(lambda: len(gate.waiting) > 0)
        assert lanes.slots.in_flight("https://hooks.example.com:443") <= 2
        gate.finish(gate.waiting[0])
    await until(lambda: lanes.slots.in_flight("https://hooks.example.com:443") == 0)
    assert not a.queue and not b.queue and gate.peak <= 3 and len(gate.calls) == 6
    await until(lambda: not lanes.tasks)  # each request's task is let go when it ends


async def test_a_freed_host_slot_passes_over_lanes_that_have_nothing_left_to_send() -> None:
    """A lane whose queue was emptied while it waited for its host (closed here; spilled by ``expire``
    alike) hands the slot on to the next lane in line, in the same pass: the slot does not stay idle
    while lanes wait for it."""
    gate = Gate()
    lanes = Lanes(gate, Outcomes(), limits(), connections_per_host=1)
    first = lanes.get(make_sub(id="first", url="https://hooks.example.com/1"))
    gone = lanes.get(make_sub(id="gone", url="https://hooks.example.com/2"))
    last = lanes.get(make_sub(id="last", url="https://hooks.example.com/3"))
    (out,) = deliveries(first.sub, 1)
    (dropped,) = deliveries(gone.sub, 1)
    (waiting,) = deliveries(last.sub, 1)
    for lane, d in ((first, out), (gone, dropped), (last, waiting)):
        assert lane.offer(d) is None
    await gate.sending(out)
    assert lanes.remove("gone") == [dropped]  # it waited in line for the host: nothing left to send
    gate.finish(out)
    await gate.sending(waiting)  # the freed slot went past the emptied lane to the next one
    assert lanes.slots.in_flight("https://hooks.example.com:443") == 1
    gate.finish(waiting)
    await until(lambda: lanes.slots.in_flight("https://hooks.example.com:443") == 0 and not lanes.tasks)


async def test_a_failed_attempt_leaves_no_reference_cycle_for_the_collector() -> None:
    """The exception's traceback holds the lane's frame: were the frame to keep the exception, every
    failed attempt would leave its delivery in a cycle until a collection (issue 18: 5% of failures
    kept megabytes of deliveries waiting for the young generation to fill)."""

    async def send(delivery: Delivery) -> None:
        raise RetryableDelivery("HTTP 500", 500)

    settled: list[int] = []
    sub = make_sub()
    lane = Lanes(send, lambda delivery, error, duration: settled.append(1), limits()).get(sub)
    gc.collect()
    gc.disable()
    try:
        for delivery in deliveries(sub, 20):
            lane.offer(delivery)
        await until(lambda: len(settled) == 20 and lane.in_flight == 0)
        await asyncio.sleep(0)
        assert gc.collect() == 0
    finally:
        gc.enable()
