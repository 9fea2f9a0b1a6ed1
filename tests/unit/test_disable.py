"""The 410 disable policy (``fanout.control.disable``) against a fake subscriptions store."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from fanout.control.disable import Disables
from fanout.model.subscription import Subscription
from fanout.pipeline.ops import DISABLED, OpsEvents
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_delivery, make_event, make_sub
from tests.unit.test_settle import FakeSink

OPS = "fx.ops"
NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


class FakeStore:
    """Compare-and-set updates of an in-memory subscriptions topic (called off the event loop)."""

    def __init__(self, *subs: Subscription, error: Exception | None = None) -> None:
        self.subs = {s.id: s for s in subs}
        self.error = error
        self.threads: list[threading.Thread] = []

    def update(self, sub_id: str, change: Callable[[Subscription], Subscription]) -> Subscription:
        self.threads.append(threading.current_thread())
        if self.error is not None:
            raise self.error
        current = self.subs[sub_id]
        self.subs[sub_id] = new = change(current).model_copy(update={"version": current.version + 1})
        return new


class Setup:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.sink = FakeSink()
        self.changes = 0
        self.disables = Disables(store, OpsEvents(self.sink, OPS), self._changed, clock=lambda: NOW)

    def _changed(self) -> None:
        self.changes += 1

    async def persisted(self) -> None:
        await asyncio.gather(*self.disables.persisting, return_exceptions=True)


def table(*subs: Subscription) -> RoutingTable:
    return RoutingTable.build(subs)


async def test_a_410_disables_at_once_tells_the_ops_topic_and_persists_the_disable() -> None:
    sub = make_sub(version=3)
    s = Setup(FakeStore(sub))
    s.disables.gone(make_delivery(sub))
    assert s.changes == 1
    local = s.disables.overlay(table(sub)).get(sub.id)
    assert local is not None and not local.enabled and local.disabled_reason == "endpoint answered 410 Gone"
    (ops,) = s.sink.to(OPS)
    assert ops.key == sub.id.encode() and ops.body["event"] == DISABLED
    reason = "endpoint answered 410 Gone at 2024-05-01T12:00:00Z"
    assert ops.body["data"] == {"subscription": sub.id, "reason": reason}
    await s.persisted()
    stored = s.store.subs[sub.id]
    assert (stored.enabled, stored.disabled_reason, stored.version) == (False, reason, 4)
    assert s.store.threads and s.store.threads[0] is not threading.current_thread()  # off the loop


async def test_a_subscription_is_disabled_once_however_many_410s_arrive() -> None:
    sub = make_sub(version=3)
    s = Setup(FakeStore(sub))
    for _ in range(3):
        s.disables.gone(make_delivery(sub))
    await s.persisted()
    assert s.changes == 1 and len(s.sink.to(OPS)) == 1 and len(s.store.threads) == 1


async def test_the_local_disable_lasts_until_the_topic_shows_a_newer_version() -> None:
    sub, other = make_sub(version=3), make_sub(id="other")
    s = Setup(FakeStore(sub, other))
    s.disables.gone(make_delivery(sub))
    again = s.disables.overlay(table(sub, other))  # the topic has not caught up yet: still disabled
    assert again.get(sub.id).enabled is False  # type: ignore[union-attr]
    assert again.get("other") == other
    reenabled = sub.model_copy(update={"version": 5})  # e.g. an operator enabled it meanwhile
    assert s.disables.overlay(table(reenabled, other)).get(sub.id) == reenabled
    current = table(sub, other)
    assert s.disables.overlay(current) is current  # forgotten: the topic decides from now on


async def test_a_deleted_subscription_forgets_its_local_disable() -> None:
    sub = make_sub(version=3)
    s = Setup(FakeStore(sub))
    s.disables.gone(make_delivery(sub))
    empty = table()
    assert s.disables.overlay(empty).subscriptions == {}
    assert s.disables.overlay(table(sub)).get(sub.id) == sub


async def test_a_failed_persist_is_logged_and_the_local_disable_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = make_sub(version=3)
    s = Setup(FakeStore(sub, error=RuntimeError("broker unavailable")))
    with caplog.at_level(logging.ERROR, logger="fanout.control.disable"):
        s.disables.gone(make_delivery(sub))
        await s.persisted()
    assert any("could not persist the disable of hook-1" in r.getMessage() for r in caplog.records)
    assert s.disables.overlay(table(sub)).get(sub.id).enabled is False  # type: ignore[union-attr]
    assert not s.disables.persisting


async def test_a_410_on_an_ops_event_delivery_disables_without_an_ops_event() -> None:
    sub = make_sub(version=1, topics=[OPS])
    s = Setup(FakeStore(sub))
    s.disables.gone(make_delivery(sub, make_event(topic=OPS)))
    await s.persisted()
    assert s.sink.to(OPS) == [] and s.store.subs[sub.id].enabled is False
