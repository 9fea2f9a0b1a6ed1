"""The subscriptions topic: the runtime source of truth for the routing table.

Compacted, key = subscription id, value = the subscription as JSON (with its ``version``), tombstone =
delete; the records are the codec's (``fanout.control.codec``: secret fields sealed on the way in,
opened on the way out). Readers take the last readable record per key: a record that cannot be decoded
is skipped (logged), so the key keeps its previous version.

The topic itself is ``fanout.kafka.compacted``'s: reading to the end, following, and compare-and-set
writes through transactional fencing. Here are what its records mean, and the writes: every write is
a plan (``fanout.control.plans``) run on the state read inside the fenced transaction; a stale
expected version raises ``VersionConflict``, and no reader ever sees a write that lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from fanout.config import Settings
from fanout.control.codec import Decoded, SubscriptionCodec
from fanout.control.plans import Change, Plan, apply_plan, delete_plan, put_plan, update_plan
from fanout.kafka import compacted
from fanout.kafka.compacted import CompactedTopic, TopicFollower, Write
from fanout.model.subscription import Subscription

__all__ = ["Change", "SubscriptionStore", "TableWatcher", "read_to_end"]


def _apply(state: dict[str, Subscription], decoded: Decoded | None) -> bool:
    if decoded is None:
        return False
    sub_id, sub = decoded
    if sub is None:
        return state.pop(sub_id, None) is not None
    state[sub_id] = sub
    return True


class _Subscriptions:
    """The subscriptions folded from the topic's records."""

    def __init__(self, codec: SubscriptionCodec) -> None:
        self.codec = codec
        self.state: dict[str, Subscription] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        return _apply(self.state, self.codec.decode(key, value))


class _Attempt(_Subscriptions):
    """One compare-and-set attempt of ``plan`` (a ``compacted.Plan``)."""

    def __init__(self, codec: SubscriptionCodec, plan: Plan) -> None:
        super().__init__(codec)
        self._plan = plan
        self.changes: list[Change] = []

    def writes(self) -> Sequence[Write]:
        self.changes = self._plan(self.state)
        return [
            Write(c.key.encode(), None if c.sub is None else self.codec.encode(c.sub)) for c in self.changes
        ]


def read_to_end(settings: Settings) -> dict[str, Subscription]:
    """Every live subscription, read from the beginning of the topic to its end."""
    subs = _Subscriptions(SubscriptionCodec(settings.secrets))
    compacted.read_to_end(settings, settings.topics.subscriptions, subs.apply)
    return subs.state


class KeyedTopic(Protocol):
    """What the store needs of the topic (``fanout.kafka.compacted.CompactedTopic``; tests use an
    in-memory one)."""

    def read(self, apply: compacted.Apply) -> None: ...

    def transact(self, new_plan: Callable[[], _Attempt]) -> tuple[_Attempt, list[int]]: ...

    def close(self) -> None: ...


class SubscriptionStore:
    """Reads and compare-and-set writes of the subscriptions topic (blocking; call from a thread).
    ``topic`` defaults to the Kafka topic ``settings.topics.subscriptions``, written with the
    ``transactional.id`` ``<topics.prefix>.subscriptions-writer`` that every writer shares."""

    def __init__(self, settings: Settings, topic: KeyedTopic | None = None) -> None:
        self._codec = SubscriptionCodec(settings.secrets)
        if topic is None:
            writer_id = f"{settings.topics.prefix}.subscriptions-writer"
            topic = CompactedTopic(settings, settings.topics.subscriptions, writer_id)
        self._topic = topic

    def read(self) -> dict[str, Subscription]:
        subs = _Subscriptions(self._codec)
        self._topic.read(subs.apply)
        return subs.state

    def transact(self, plan: Plan) -> list[Change]:
        """Read the current state, let ``plan`` decide the changes (it may raise VersionConflict), write
        them in one transaction. Starts over when another writer fenced this one."""
        attempt, offsets = self._topic.transact(lambda: _Attempt(self._codec, plan))
        return [replace(c, offset=o) for c, o in zip(attempt.changes, offsets, strict=True)]

    def put(
        self, sub: Subscription, expected_version: int | None = None, create: bool = False
    ) -> Subscription:
        """Write ``sub`` as the next version. ``expected_version`` (None: any) must match the current one;
        with ``create`` the subscription must not exist yet."""
        return self._only_sub(self.transact(put_plan(sub, expected_version, create)))

    def update(
        self, sub_id: str, change: Callable[[Subscription], Subscription], expected_version: int | None = None
    ) -> Subscription:
        """Apply ``change`` to the current version of ``sub_id`` and write the result (KeyError if it
        does not exist)."""
        return self._only_sub(self.transact(update_plan(sub_id, change, expected_version)))

    def delete(self, sub_id: str, expected_version: int | None = None) -> bool:
        return bool(self.transact(delete_plan(sub_id, expected_version)))

    def apply(self, subs: Iterable[Subscription], prune: bool = False) -> list[Change]:
        """Upsert ``subs`` (unchanged ones are skipped); with ``prune`` delete every other subscription."""
        return self.transact(apply_plan(subs, prune))

    def rewrite_all(self) -> list[Change]:
        """Write every subscription again as its next version: re-seals its secrets with the first key
        of ``secrets.keys`` (after a key rotation, before the old key is dropped)."""

        def plan(current: dict[str, Subscription]) -> list[Change]:
            return [Change(i, s.model_copy(update={"version": s.version + 1})) for i, s in current.items()]

        return self.transact(plan)

    @staticmethod
    def _only_sub(changes: list[Change]) -> Subscription:
        assert len(changes) == 1 and changes[0].sub is not None
        return changes[0].sub

    def close(self) -> None:
        self._topic.close()


class TableWatcher:
    """Follows the subscriptions topic on its own thread; calls ``on_change(state)`` after the initial
    read to the end (``ready`` is set then) and after every batch that changed something.

    ``position`` is the offset after the last record read; ``on_position(position)``, if given, is
    called after every batch that moved it (so a writer can wait until its own write was read)."""

    def __init__(
        self,
        settings: Settings,
        on_change: Callable[[dict[str, Subscription]], None],
        on_position: Callable[[int], None] | None = None,
    ) -> None:
        self._subs = _Subscriptions(SubscriptionCodec(settings.secrets))
        self._on_change = on_change
        self._follower = TopicFollower(
            settings,
            settings.topics.subscriptions,
            self._subs.apply,
            self._changed,
            on_position,
            thread_name="fanout-subscriptions",
        )
        self.ready = self._follower.ready

    def _changed(self) -> None:
        self._on_change(dict(self._subs.state))

    @property
    def position(self) -> int:
        return self._follower.position

    @property
    def error(self) -> Exception | None:
        return self._follower.error

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()
