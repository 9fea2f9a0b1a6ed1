"""A lane's pace (fanout.pipeline.pace): when a spilled delivery is due back, how long a queued one waits."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.pipeline import limits as limits_module
from fanout.pipeline.limits import TokenBucket
from fanout.pipeline.pace import LoopLag, Pace, next_due

seconds = st.floats(min_value=0, max_value=3600, allow_nan=False)
rates = st.floats(min_value=0.001, max_value=100_000, allow_nan=False)
# One spill: time passed since the previous one, the wait for what the lane queues, and a breaker's
# cool-down still to run (0 when it is closed).
spills = st.lists(st.tuples(seconds, seconds, seconds), min_size=1, max_size=60)


class FrozenClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    clock = FrozenClock()
    monkeypatch.setattr(limits_module, "time", clock)
    return clock


def run(
    pace: Pace, ops: list[tuple[float, float, float]], rate: float, lead: float
) -> list[dict[str, float]]:
    now, out = 100.0, []
    for passed, wait, cooling in ops:
        now += passed
        earliest = now + cooling if cooling else 0.0
        before = pace.horizon
        delay = pace.schedule(now, wait, rate, earliest, lead)
        slot = pace.horizon - 1 / rate
        out.append(
            {"now": now, "wait": wait, "earliest": earliest, "before": before, "slot": slot, "delay": delay}
        )
    return out


@given(spills, rates, st.floats(min_value=0, max_value=10))
def test_spill_slots_are_monotone_and_spaced_at_the_lanes_pace(
    ops: list[tuple[float, float, float]], rate: float, lead: float
) -> None:
    slots = [s["slot"] for s in run(Pace(), ops, rate, lead)]
    for earlier, later in itertools.pairwise(slots):
        assert later >= earlier + 1 / rate - 1e-6 * max(1.0, abs(later))


@given(spills, rates, st.floats(min_value=0, max_value=10))
def test_a_spill_comes_back_after_the_queue_and_the_cool_down_and_no_later_than_needed(
    ops: list[tuple[float, float, float]], rate: float, lead: float
) -> None:
    for s in run(Pace(), ops, rate, lead):
        tolerance = 1e-6 * max(1.0, s["slot"])
        # Not before what the lane queues could start, nor before the breaker's cool-down ends ...
        assert s["slot"] >= s["now"] + s["wait"] - tolerance
        assert s["now"] + s["delay"] >= s["earliest"] - tolerance
        assert s["delay"] >= 0
        # ... and no later than the first of those moments that also follows the previous spill's slot.
        assert s["slot"] <= max(s["now"] + s["wait"], s["earliest"], s["before"]) + tolerance
        # It comes back at most ``lead`` early, never late.
        assert s["slot"] - lead - tolerance <= s["now"] + s["delay"] <= s["slot"] + tolerance


@given(st.integers(min_value=1, max_value=500), rates, seconds)
def test_a_burst_of_spills_is_spread_exactly_at_the_pace(n: int, rate: float, wait: float) -> None:
    pace = Pace()
    delays = [pace.schedule(100.0, wait, rate) for _ in range(n)]
    assert delays == pytest.approx([wait + i / rate for i in range(n)], rel=1e-9, abs=1e-9)


def test_deliveries_spilled_while_the_circuit_is_open_come_back_spread_after_the_cool_down() -> None:
    pace = Pace()
    delays = [pace.schedule(100.0, 0.0, 10.0, earliest=130.0) for _ in range(4)]
    # The first when the cool-down ends, the next ones a tenth of a second apart: not all at once when
    # the breaker half-opens.
    assert delays == pytest.approx([30.0, 30.1, 30.2, 30.3])
    # Coming back half a second early, never before the cool-down ends.
    pace = Pace()
    delays = [pace.schedule(100.0, 0.0, 10.0, earliest=130.0, lead=0.5) for _ in range(10)]
    assert delays == pytest.approx([30.0] * 6 + [30.1, 30.2, 30.3, 30.4])


def test_the_horizon_passes() -> None:
    pace = Pace()
    for _ in range(10):
        pace.schedule(100.0, 1.0, 1.0)
    assert pace.horizon == pytest.approx(111.0)
    assert pace.schedule(200.0, 1.0, 1.0) == pytest.approx(1.0)  # long after: only the queue counts


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=64), rates)
def test_wait_without_a_latency_or_a_bucket_is_zero(ahead: int, in_flight: int, rate: float) -> None:
    assert Pace().wait(ahead, in_flight, 64, None) == 0.0


@given(
    st.floats(min_value=0.001, max_value=60),
    st.integers(min_value=1, max_value=256),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=256),
)
def test_wait_grows_with_the_queue_at_max_in_flight_per_latency(
    latency: float, most: int, ahead: int, in_flight: int
) -> None:
    pace = Pace()
    pace.latency = latency
    in_flight = min(in_flight, most)
    wait, next_wait = pace.wait(ahead, in_flight, most, None), pace.wait(ahead + 1, in_flight, most, None)
    assert wait == pytest.approx(max(0, ahead + in_flight + 1 - most) * latency / most)
    assert next_wait >= wait
    assert next_wait - wait <= latency / most + 1e-9  # one more ahead costs one request's share


def test_wait_counts_only_the_endpoints_share_of_the_latency() -> None:
    pace = Pace()
    pace.latency = 0.5
    assert pace.wait(99, 1, 10, None) == pytest.approx(4.55)  # 91 behind the 10 slots, 0.05 s each
    assert pace.wait(99, 1, 10, None, lag=0.2) == pytest.approx(0.91)  # 0.1 s a request is the endpoint's
    assert pace.wait(99, 1, 10, None, lag=0.3) == 0.0  # the loop's lag explains all of it
    assert pace.wait(99, 1, 10, None, stalled=3.0, lag=0.3) == pytest.approx(27.3)  # but not a stall


def test_wait_for_tokens(frozen: FrozenClock) -> None:
    bucket = TokenBucket(rate=10, capacity=3)
    pace = Pace()
    assert [pace.wait(ahead, 0, 32, bucket) for ahead in range(5)] == pytest.approx([0, 0, 0, 0.1, 0.2])
    assert bucket.take() == 0.0  # asking spent nothing: three tokens, two left after this take
    assert pace.wait(2, 0, 32, bucket) == pytest.approx(0.1)
    frozen.now += 0.05
    assert pace.wait(2, 0, 32, bucket) == pytest.approx(0.05)


@given(rates, st.floats(min_value=0.001, max_value=60), st.integers(min_value=1, max_value=1024), seconds)
def test_rate_is_the_lower_of_the_bucket_and_the_endpoint(
    bucket_rate: float, latency: float, most: int, stalled: float
) -> None:
    pace = Pace()
    pace.latency = latency
    bucket = TokenBucket(bucket_rate, 1)
    assert pace.rate(most, bucket) == pytest.approx(min(bucket_rate, most / latency))
    assert pace.rate(most, None, stalled) == pytest.approx(most / max(latency, stalled))
    assert pace.rate(most, None, stalled) <= pace.rate(most, None)


@given(st.floats(min_value=0.01, max_value=60), st.integers(min_value=1, max_value=1024), seconds)
def test_a_stalled_lane_keeps_only_what_starts_within_max_wait(
    max_wait: float, most: int, stalled: float
) -> None:
    pace = Pace()
    keep = pace.keep(max_wait, most, None, stalled)
    assert keep >= 0
    assert keep / pace.rate(most, None, stalled) <= max_wait + 1e-9


def test_answered_latency_is_a_moving_average() -> None:
    pace = Pace()
    assert pace.latency is None
    pace.answered(1.0)
    assert pace.latency == 1.0
    for _ in range(100):
        pace.answered(0.1)
    assert pace.latency == pytest.approx(0.1, rel=0.01)
    pace.answered(-5)  # a clock that went backwards cannot make it zero or negative
    assert pace.latency is not None and pace.latency > 0


def test_next_due() -> None:
    assert next_due(10.0, 2.0, 0.0, 0.0) == 12.0
    assert next_due(10.0, 2.0, 15.0, 0.0) == 15.0
    assert next_due(10.0, 2.0, 15.0, 40.0) == 40.0


async def test_loop_lag_measures_a_blocked_loop() -> None:
    lag = LoopLag()
    lag.start()
    lag.start()  # once
    try:
        await asyncio.sleep(0.2)
        quiet = lag.peak
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a callback that holds the loop
        await asyncio.sleep(0.4)
        assert lag.peak >= 0.2 > quiet
    finally:
        lag.stop()


def test_loop_lag_outside_a_loop_does_nothing() -> None:
    lag = LoopLag()
    lag.start()
    assert lag.peak == 0.0
