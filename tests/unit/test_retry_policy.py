"""The retry policy: delays, Retry-After, max_age and max_pending, spill delays, tier choice; and the
runtime building it (and the settle topics) from Settings."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fanout.config import DeliverySettings, KafkaSettings, RetrySettings, Settings, TopicSettings
from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline.retry_policy import RetryPolicy
from fanout.runtime import wiring
from tests.unit.factories import make_delivery, make_sub


def make_policy(**overrides: Any) -> RetryPolicy:
    """The policy of ``test_settle.make_settings``: tiers and schedule 1 s, 5 s, 30 s; no jitter."""
    values: dict[str, Any] = {
        "tiers": (1, 5, 30),
        "schedule": (1, 5, 30),
        "jitter": 0,
        "max_age": 3600,
        "max_pending": 86_400,
        "retry_after_max": 60,
    }
    values.update(overrides)
    return RetryPolicy(**values)


def delivery(
    attempt: int, age: float = 0.0, sub: Subscription | None = None, waited: float | None = None
) -> Delivery:
    """A delivery whose ``attempt`` attempts failed, the first ``age`` seconds ago (never attempted when
    ``waited`` is given: routed ``waited`` seconds ago)."""
    d = make_delivery(sub or make_sub(), attempt=attempt, first_attempt=time.time() - age)
    if waited is not None:
        d.first_attempt, d.received = 0.0, time.time() - waited
    return d


# -- after a failed attempt -------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "delay"), [(1, 1), (2, 5), (3, 30)])
def test_the_schedule_gives_the_delay_of_each_attempt(attempt: int, delay: float) -> None:
    assert make_policy().next_delay(delivery(attempt), None) == (delay, "")


def test_the_schedule_running_out_ends_the_retries() -> None:
    assert make_policy().next_delay(delivery(4), None) == (None, "retries exhausted")


def test_jitter_stays_within_its_bounds_and_varies() -> None:
    policy = make_policy(schedule=(100,), jitter=0.2)
    delays = [policy.next_delay(delivery(1), None)[0] for _ in range(200)]
    assert all(d is not None and 80 <= d <= 120 for d in delays)
    assert len(set(delays)) > 100


def test_retry_after_raises_the_delay_up_to_its_clamp() -> None:
    policy = make_policy()  # retry_after_max 60 s
    assert policy.next_delay(delivery(1), 20) == (20, "")
    assert policy.next_delay(delivery(1), 86_400) == (60, "")


def test_a_shorter_retry_after_does_not_shorten_the_schedule() -> None:
    assert make_policy().next_delay(delivery(3), 0) == (30, "")


def test_max_age_counts_from_the_first_attempt() -> None:
    policy = make_policy()  # max_age 3600 s
    assert policy.next_delay(delivery(1, age=3598), None) == (1, "")
    assert policy.next_delay(delivery(1, age=3599.5), None) == (None, "max age exceeded")
    assert policy.next_delay(delivery(2, age=3599.5), 0) == (None, "max age exceeded")


def test_a_subscriptions_schedule_and_max_age_override_the_defaults() -> None:
    policy = make_policy()
    own = make_sub(retry={"schedule": [7, 8], "max_age": 10})
    assert policy.next_delay(delivery(1, sub=own), None) == (7, "")
    assert policy.next_delay(delivery(3, sub=own), None) == (None, "retries exhausted")
    assert policy.next_delay(delivery(2, age=5, sub=own), None) == (None, "max age exceeded")


# -- after a spill ----------------------------------------------------------------------------------


def test_a_spill_may_wait_until_max_age_since_its_first_attempt() -> None:
    policy = make_policy()
    assert policy.spill_expired(delivery(1, age=3599), "rate limited") is None
    assert policy.spill_expired(delivery(1, age=3600), "rate limited") == "rate limited"
    own = make_sub(retry={"max_age": 10})
    assert policy.spill_expired(delivery(1, age=10, sub=own), "lane full") == "lane full"


def test_a_spill_never_attempted_is_bounded_by_max_pending_not_max_age() -> None:
    policy = make_policy(max_pending=600)  # max_age 3600 s
    assert policy.spill_expired(delivery(0, waited=599), "circuit open") is None
    assert (
        policy.spill_expired(delivery(0, waited=601), "circuit open")
        == "circuit open: not attempted within 600s"
    )
    patient = make_policy(max_pending=86_400)
    assert patient.spill_expired(delivery(0, waited=7200), "rate limited") is None  # fanout's own pace


def test_a_spill_comes_back_when_its_lane_said_never_later_than_the_longest_tier() -> None:
    policy = make_policy()
    assert policy.spill_delay(None) == 1
    assert policy.spill_delay(12.5) == 12.5
    assert policy.spill_delay(10_000) == 30


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0, 0), (0.5, 0), (1, 0), (1.001, 1), (5, 1), (5.5, 2), (30, 2), (31, 2), (10_000, 2)],
)
def test_tier_for_picks_the_smallest_tier_at_least_the_delay(delay: float, tier: int) -> None:
    assert make_policy().tier_for(delay) == tier


@pytest.mark.parametrize("tiers", [(), (5, 5), (30, 5)])
def test_tiers_must_be_increasing(tiers: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        make_policy(tiers=tiers)


# -- built from Settings ----------------------------------------------------------------------------


def test_the_runtime_builds_the_policy_and_the_topics_from_settings() -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
        topics=TopicSettings(prefix="fx"),
        retry=RetrySettings(tiers=[1, 5, 30], schedule=[2, 4], jitter=0.1, max_age=900, max_pending=1800),
        delivery=DeliverySettings(retry_after_max=120),
    )
    assert wiring.retry_policy(settings) == RetryPolicy(
        tiers=(1, 5, 30), schedule=(2, 4), jitter=0.1, max_age=900, max_pending=1800, retry_after_max=120
    )
    topics = wiring.record_topics(settings)
    assert topics.retry == ("fx.retry.0", "fx.retry.1", "fx.retry.2") and topics.dlq == "fx.dlq"
