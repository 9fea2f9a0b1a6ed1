"""A 410 Gone disables its subscription: here at once, in the subscriptions topic for good, and told to
the ops topic.

``Disables.gone(delivery)`` (settle's ``on_gone`` hook) for a subscription not already being disabled:

1. keeps it disabled locally (``overlay``, reason ``endpoint answered 410 Gone``) and calls
   ``on_change`` so that the runtime installs the routing table again: from now on its events are
   dead-lettered as ``subscription disabled``;
2. emits ``fanout.subscription.disabled`` (``OpsEvents.disabled``; not for deliveries of ops events);
3. persists the disable, ``enabled: false`` with the reason and the time, as the subscription's next
   version (``store.update``, a compare-and-set write of the subscriptions topic, run off the event
   loop). A failed write is logged; the local disable stays.

``overlay(table)`` keeps each local disable until the topic shows a newer version than the one that
answered 410 (the persisted disable, or an operator's change, e.g. re-enabling it) or the subscription
is deleted; then it is forgotten and the topic decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from fanout.control.plans import disabled
from fanout.model.event import Delivery
from fanout.model.subscription import Subscription
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.route import RoutingTable

log = logging.getLogger("fanout.control.disable")

LOCAL_REASON = "endpoint answered 410 Gone"


class SubscriptionUpdater(Protocol):
    def update(self, sub_id: str, change: Callable[[Subscription], Subscription]) -> Subscription:
        """Write ``change`` of the current version as the next version (blocking; KeyError if the
        subscription does not exist)."""
        ...


class Disables:
    def __init__(
        self,
        store: SubscriptionUpdater,
        ops: OpsEvents,
        on_change: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ops = ops
        self._on_change = on_change
        self._clock = clock
        self._local: dict[str, int] = {}  # subscription id -> the version that answered 410
        self.persisting: set[asyncio.Future[Subscription]] = set()

    def gone(self, delivery: Delivery) -> None:
        sub = delivery.subscription
        if sub.id in self._local:
            return
        reason = f"{LOCAL_REASON} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self._clock()))}"
        self._local[sub.id] = sub.version
        self._on_change()
        self._ops.disabled(delivery, reason)
        log.warning(
            "disabling subscription %s: %s",
            sub.id,
            reason,
            extra={
                "subscription": sub.id,
                "event_id": delivery.event.id,
                "traceparent": delivery.traceparent,
            },
        )
        future = asyncio.get_running_loop().run_in_executor(
            None, self._store.update, sub.id, lambda s: disabled(s, reason)
        )
        self.persisting.add(future)
        future.add_done_callback(lambda f: self._persisted(sub.id, f))

    def _persisted(self, sub_id: str, future: asyncio.Future[Subscription]) -> None:
        self.persisting.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("could not persist the disable of %s: %s", sub_id, future.exception())

    def overlay(self, table: RoutingTable) -> RoutingTable:
        """``table`` with the local disables applied (the same table when there are none)."""
        if not self._local:
            return table
        subs = dict(table.subscriptions)
        for sub_id, version in list(self._local.items()):
            sub = subs.get(sub_id)
            if sub is None or sub.version > version:
                del self._local[sub_id]
            elif sub.enabled:
                subs[sub_id] = disabled(sub, LOCAL_REASON)
        return RoutingTable.build(subs.values())
