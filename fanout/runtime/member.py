"""A consumer-group member: one consumer thread feeding one dispatcher, and the offsets between them.

The consumer thread submits its batches to the dispatcher, which refuses them while its lanes hold
fetching (``model.ports.BatchTarget``): backpressure is that answer, not a callback.

The dispatcher process runs one member for the shared group (every unordered subscription, plus the
retry tiers) and one per key-ordered subscription, each in a group of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from fanout.config import Settings
from fanout.kafka.consumer import ConsumerHooks, ConsumerThread
from fanout.model.errors import FatalKafkaError
from fanout.model.ownership import Ownership, rate_share
from fanout.model.subscription import Subscription
from fanout.pipeline.dispatch import Dispatcher


class GroupMember:
    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        dispatcher: Dispatcher,
        topics: Iterable[str],
        group_id: str,
        on_fatal: Callable[[FatalKafkaError], None],
        instance_id: str | None = None,
        seed_from: str | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.group_id = group_id
        self.topics = frozenset(topics)
        self.ownership: Ownership | None = None
        self._stored: dict[tuple[str, int], int] = {}
        self.consumer = ConsumerThread(
            settings,
            self.topics,
            dispatcher.retry_topics,
            loop,
            dispatcher,
            ConsumerHooks(
                assign=dispatcher.assign,
                drain=dispatcher.drain,
                fatal=on_fatal,
                assignment_changed=self._owned,
            ),
            group_id=group_id,
            instance_id=instance_id,
            seed_from=seed_from,
        )

    def start(self) -> None:
        self.consumer.start()

    def _owned(self, ownership: Ownership) -> None:
        self.ownership = ownership
        retry = self.dispatcher.retry_topics
        self.dispatcher.lanes.set_shares(lambda sub: rate_share(ownership, sub.topics, retry))

    def share(self, sub: Subscription) -> float:
        return rate_share(self.ownership, sub.topics, self.dispatcher.retry_topics)

    def subscribe(self, topics: Iterable[str]) -> None:
        topics = frozenset(topics)
        if topics != self.topics:
            self.topics = topics
            self.consumer.subscribe(topics)

    def tick(self) -> None:
        """Store the offsets that became committable, and spill deliveries that waited too long."""
        dispatcher = self.dispatcher
        offsets = dispatcher.committable()
        changed = {tp: o for tp, o in offsets.items() if self._stored.get(tp) != o}
        if changed:
            self.consumer.store(changed, {tp: dispatcher.trackers[tp].epoch for tp in changed})
            self._stored.update(changed)
        dispatcher.lanes.expire()

    async def stop(self) -> None:
        """Stop fetching, drain under the deadline, commit, leave the group."""
        self.consumer.stop()
        await self.consumer.finished
