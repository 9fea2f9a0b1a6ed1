"""The consumer thread: the only owner of the group ``Consumer``.

It polls in batches and hands records to the event loop. Everything that touches the consumer happens
here, in one thread, in this order each cycle: commands from the loop (store offsets, re-subscribe),
due retry partitions resumed, one ``consume()`` call, and the batch handed over.

- **Retry tiers.** A retry record that is not due yet is held back here, with the records behind it, and
  its partition is paused; they are handed over in order as they come due, and the partition resumes
  fetching once nothing is held back. Nothing is fetched twice, and the poll loop never sleeps. Records
  another group wrote are not held (the dispatcher skips them). A new group starts the tiers at their
  end (``starts.start_retry_tiers_at_end``).
- **Backpressure.** Per partition, records read but not committed are bounded by ``max_uncommitted``,
  exactly: a record beyond the bound is not handed over (the partition is paused and rewound to it),
  and the partition resumes when commits bring it under half. A crash re-delivers at most that many.
  librdkafka keeps a partition's pause flag across an incremental unassign/assign, so a partition's
  flag is unknown when it is assigned and is set explicitly before it is fetched (``PauseBook``).
- **Callbacks** must not call client methods that set up a call state (``list_topics``, ``poll``...):
  confluent-kafka keeps one per thread, and the nested call clears the outer one.
- **Rebalances** run inside ``consume()`` on this thread (librdkafka calls the callbacks there). A
  revoke blocks this thread while the loop drains the partitions' deliveries under the drain deadline;
  then their offsets are committed synchronously. Each assignment gets a new local epoch, and stores
  from an older epoch are ignored (the Python client does not expose the group generation). Lost
  partitions (the session expired) are not drained: their trackers are closed without a commit, by
  epoch, so a re-assignment of the same partition keeps its new tracker.
- **Health.** ``last_cycle`` is when the loop last started a cycle (``/healthz``); ``stats`` is the
  latest librdkafka statistics digest (every ``STATS_INTERVAL_MS``): brokers up, group join state and
  consumer lag per owned partition (``/readyz`` and metrics). ``stall(seconds)`` is a test hook that
  blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from fanout.config import Settings
from fanout.kafka.pauses import PauseBook
from fanout.kafka.starts import seed_offsets, start_retry_tiers_at_end
from fanout.model.errors import FatalKafkaError
from fanout.model.event import Headers
from fanout.model.headers import for_group, not_before_ms
from fanout.model.ownership import Ownership

log = logging.getLogger("fanout.kafka.consumer")

TP = tuple[str, int]
POLL_SECONDS = 0.1
HELD_POLL_SECONDS = 0.01
HOLD_WITHOUT_PAUSE = 1.0
# Retry records not due yet that this consumer holds in memory, all partitions together. A partition
# always holds its first one (that is what gates it); past the budget, the partitions holding any pause.
HELD_BACK_BUDGET = 2000
STATS_INTERVAL_MS = 5000
# (partitions and the epoch they were assigned in, or None for all; monotonic deadline) -> offsets
Drain = Callable[[dict[TP, int] | None, float], Coroutine[Any, Any, dict[TP, int]]]


@dataclass
class _PartitionState:
    epoch: int
    committed: int | None = None
    last: int | None = None
    gated_until: float | None = None
    backpressured: bool = False
    held_back: deque[Message] = field(default_factory=deque)  # retry records not due yet, in order


@dataclass(frozen=True)
class ConsumerStats:
    """A digest of librdkafka's statistics: when it came (monotonic), whether any broker connection is
    up, the group's join state, and the lag (records) of each owned partition."""

    at: float = 0.0
    brokers_up: bool = False
    join_state: str = ""
    lag: dict[TP, int] = field(default_factory=dict)


def digest_stats(text: str, owned: Iterable[TP]) -> ConsumerStats:
    stats = orjson.loads(text)
    brokers_up = any(
        b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in (stats.get("brokers") or {}).values()
    )
    owned = set(owned)
    lag: dict[TP, int] = {}
    for topic, info in (stats.get("topics") or {}).items():
        for pid, part in (info.get("partitions") or {}).items():
            tp = (topic, int(pid))
            if tp not in owned:
                continue
            value = part.get("consumer_lag", -1)
            if value < 0:
                value = part.get("consumer_lag_stored", -1)
            if value >= 0:
                lag[tp] = value
    join_state = str((stats.get("cgrp") or {}).get("join_state", ""))
    return ConsumerStats(time.monotonic(), brokers_up, join_state, lag)


@dataclass
class ConsumerHooks:
    """What the consumer thread calls on the event loop."""

    assign: Callable[[list[TP], int], None]
    records: Callable[[list[Message]], None]
    drain: Drain
    fatal: Callable[[FatalKafkaError], None]
    assignment_changed: Callable[[Ownership], None] = field(default=lambda ownership: None)


def consumer_config(
    settings: Settings,
    group_id: str,
    on_commit: Callable[..., None],
    instance_id: str | None = None,
    on_stats: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    d = settings.dispatcher
    static: dict[str, Any] = {"group.instance.id": instance_id} if instance_id else {}
    if on_stats is not None:
        static.update({"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": on_stats})
    return {
        **static,
        **settings.kafka.librdkafka(),
        "group.id": group_id,
        **group_protocol_config(settings),
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": d.commit_interval_ms,
        "auto.offset.reset": d.auto_offset_reset,
        "max.poll.interval.ms": d.max_poll_interval_ms,
        "isolation.level": "read_committed",
        "fetch.max.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,  # bounded prefetch: memory stays flat under backlog
        "queued.min.messages": 20_000,
        # When the prefetch queue is full, librdkafka waits this long before fetching again once it has
        # drained (default 1 s): long enough to starve the lanes for most of a second at high rates.
        "fetch.queue.backoff.ms": 10,
        "on_commit": on_commit,
    }


def consumer_error(error: KafkaError) -> None:
    """An error ``consume()`` returned: raise FatalKafkaError if the consumer cannot go on. librdkafka
    reports a fatal error there as ``_FATAL`` without the fatal flag (the flag is set only on the
    error callback's copy), e.g. a static member fenced by another with its ``group.instance.id``."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise FatalKafkaError(f"consumer: {error.str()}")
    if error.code() == KafkaError._PARTITION_EOF:
        return
    log.warning("consumer: %s", error.str())


def group_protocol_config(settings: Settings) -> dict[str, Any]:
    """How a member of a fanout consumer group joins it. With the KIP-848 ``consumer`` protocol the
    broker assigns partitions (incrementally, like cooperative-sticky) and owns the session timeout and
    heartbeat interval (``group.consumer.session.timeout.ms``...); librdkafka rejects the classic
    settings there."""
    d = settings.dispatcher
    if d.group_protocol == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": d.session_timeout_ms,
        "heartbeat.interval.ms": min(d.heartbeat_interval_ms, d.session_timeout_ms // 3),
    }


class ConsumerThread:
    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        retry_topics: Iterable[str],
        loop: asyncio.AbstractEventLoop,
        hooks: ConsumerHooks,
        group_id: str | None = None,
        instance_id: str | None = None,
        seed_from: str | None = None,
    ) -> None:
        self._settings = settings
        self._topics = sorted(set(topics) | set(retry_topics))
        self._retry_topics = frozenset(retry_topics)
        self._loop = loop
        self._hooks = hooks
        self._group_id = group_id or settings.dispatcher.group_id
        self._instance_id = instance_id
        self._seed_from = seed_from
        self._commands: queue.SimpleQueue[Callable[[Consumer], None]] = queue.SimpleQueue()
        self._parts: dict[TP, _PartitionState] = {}
        self._pauses = PauseBook()
        self._epoch = 0
        self._stop = threading.Event()
        self.joined = threading.Event()
        self.held = False
        self._held_since: float | None = None
        self._wake = threading.Event()
        self._handed = 0  # batches handed to the loop (written by this thread only)
        self._processed = 0  # batches the loop has taken (written by the loop only)
        self._taken = threading.Event()
        self._ownership_changed = False
        self.last_cycle = time.monotonic()
        self.stats = ConsumerStats()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name="fanout-consumer", daemon=True)

    # -- called from the event loop -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop fetching, drain everything under the deadline, commit, leave the group."""
        self._stop.set()

    def hold(self, held: bool) -> None:
        """Stop (True) or resume (False) handing over records: the lanes are saturated.

        A short hold just skips ``consume()`` (librdkafka keeps its prefetched records, so resuming is
        immediate); a hold longer than ``HOLD_WITHOUT_PAUSE`` pauses every partition and polls again, so
        that rebalances are still served."""
        self.held = held
        if not held:
            self._wake.set()

    def store(self, offsets: dict[TP, int], epochs: dict[TP, int]) -> None:
        self._commands.put(lambda c: self._store(c, offsets, epochs))

    def subscribe(self, topics: Iterable[str]) -> None:
        wanted = sorted(set(topics) | self._retry_topics)
        self._commands.put(lambda c: self._subscribe(c, wanted))

    @property
    def assigned(self) -> int:
        return len(self._parts)

    def paused_partitions(self) -> frozenset[TP]:
        """The partitions this consumer has paused (read from another thread: a snapshot)."""
        return self._pauses.paused()

    @property
    def group_id(self) -> str:
        return self._group_id

    def stall(self, seconds: float) -> None:
        """Test hook: block the poll loop for ``seconds`` (``/healthz`` must notice)."""
        self._commands.put(lambda c: time.sleep(seconds))

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(
                consumer_config(
                    self._settings, self._group_id, self._on_commit, self._instance_id, self._on_stats
                )
            )
            if self._seed_from is not None:
                seed_offsets(self._settings, consumer, self._topics, self._seed_from)
            if self._retry_topics:
                start_retry_tiers_at_end(consumer, self._topics, self._retry_topics)
            self._subscribe(consumer, self._topics)
            batch = self._settings.dispatcher.batch_size
            while not self._stop.is_set():
                self._cycle(consumer, batch)
            self._shutdown(consumer)
        except FatalKafkaError as exc:
            self._loop.call_soon_threadsafe(self._hooks.fatal, exc)
        except Exception as exc:
            log.exception("consumer thread failed")
            self._loop.call_soon_threadsafe(self._hooks.fatal, FatalKafkaError(f"consumer: {exc}"))
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except (KafkaException, RuntimeError) as exc:
                    log.warning("closing the consumer: %s", exc)
            self._loop.call_soon_threadsafe(_resolve, self.finished)

    def _subscribe(self, consumer: Consumer, topics: list[str]) -> None:
        self._topics = topics
        consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _cycle(self, consumer: Consumer, batch: int) -> None:
        now = self.last_cycle = time.monotonic()
        while True:
            try:
                self._commands.get_nowait()(consumer)
            except queue.Empty:
                break
        if not self.held:
            self._held_since = None
        elif self._held_since is None:
            self._held_since = now
        if self._held_since is not None and now - self._held_since < HOLD_WITHOUT_PAUSE:
            self._wake.wait(HELD_POLL_SECONDS)
            self._wake.clear()
            return
        if self._handed > self._processed:
            # The loop has not taken the last batch yet: fetching ahead of it would outrun its flow control.
            self._taken.wait(HELD_POLL_SECONDS)
            self._taken.clear()
            return
        self._update_pauses(consumer)
        # Block for the first record only, then take what is already fetched: a batch never waits to
        # fill up, so latency stays low at low rates and batches grow with the rate.
        first = consumer.poll(self._poll_timeout())
        messages = [first, *consumer.consume(batch - 1, 0)] if first is not None else []
        if self._ownership_changed:
            self._announce(consumer)
        now_ms = time.time() * 1000
        out = self._release_due(now_ms)
        if messages:
            self.joined.set()
        rewound: set[TP] = set()
        held_total = self.held_back_count()
        for msg in messages:
            error = msg.error()
            if error is not None:
                consumer_error(error)
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            state = self._parts.get(tp)
            if state is None or tp in rewound:
                continue  # not ours any more / behind a rewind already made in this batch
            offset = msg.offset() or 0
            if state.held_back:  # behind a retry record that is not due: keep the order
                if held_total < HELD_BACK_BUDGET:
                    state.held_back.append(msg)
                    held_total += 1
                else:
                    self._rewind(consumer, tp, offset, rewound)  # fetched again later
                continue
            if self._pauses.is_paused(tp):
                self._rewind(consumer, tp, offset, rewound)
                continue
            if tp[0] in self._retry_topics:
                due = self._due_ms(msg)
                if due is not None and due > now_ms:
                    # Held here until due. The partition keeps fetching (a tier's records come due in
                    # order, so the next ones queue behind this one) while the consumer holds fewer
                    # than HELD_BACK_BUDGET records, then pauses: pausing at every record not due made
                    # librdkafka fetch a tier one record at a time.
                    state.held_back.append(msg)
                    held_total += 1
                    state.gated_until = due / 1000
                    continue
            if not self._within_bound(offset, state):
                self._rewind(consumer, tp, offset, rewound)
                continue
            state.last = offset
            out.append(msg)
        if out:
            self._handed += 1
            self._loop.call_soon_threadsafe(self._hand_over, out)

    def _hand_over(self, records: list[Message]) -> None:
        """On the loop: give a batch to the dispatcher, then let the consumer thread fetch the next."""
        try:
            self._hooks.records(records)
        finally:
            self._processed += 1
            self._taken.set()

    def _within_bound(self, offset: int, state: _PartitionState) -> bool:
        """May ``offset`` be handed over under ``max_uncommitted``? If not, the partition is backpressured."""
        if state.committed is None:
            state.committed = offset
        if offset + 1 - state.committed > self._settings.dispatcher.max_uncommitted:
            state.backpressured = True
            return False
        return True

    def _release_due(self, now_ms: float) -> list[Message]:
        """Retry records held back that are now due, in order (up to the ``max_uncommitted`` bound)."""
        out: list[Message] = []
        for state in self._parts.values():
            held = state.held_back
            while held:
                head = held[0]
                due = self._due_ms(head)
                if due is not None and due > now_ms:
                    state.gated_until = due / 1000
                    break
                if not self._within_bound(head.offset() or 0, state):
                    break
                held.popleft()
                state.last = head.offset()
                out.append(head)
            if not held:
                state.gated_until = None
        return out

    def _due_ms(self, msg: Message) -> int | None:
        """When a retry record may be handed over (epoch ms; None: now). Another group's record is
        handed over at once, never held: the dispatcher skips it."""
        headers = cast(Headers, msg.headers())
        return not_before_ms(headers) if for_group(headers, self._group_id) else None

    def held_back_count(self) -> int:
        """Retry records held in memory until due, all partitions together."""
        return sum(len(state.held_back) for state in self._parts.values())

    def _rewind(self, consumer: Consumer, tp: TP, offset: int, rewound: set[TP]) -> None:
        """Hand nothing from ``offset`` on: pause the partition and seek back to it, so that every record
        not handed over is fetched again when it resumes (a skipped record is never lost)."""
        partition = TopicPartition(tp[0], tp[1], offset)
        if self._pauses.pause(tp):
            consumer.pause([partition])
        consumer.seek(partition)
        rewound.add(tp)

    def _poll_timeout(self) -> float:
        if self.held:
            return HELD_POLL_SECONDS
        gates = [s.gated_until for s in self._parts.values() if s.held_back and s.gated_until is not None]
        if not gates:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, min(gates) - time.time()))

    def _update_pauses(self, consumer: Consumer) -> None:
        limit = self._settings.dispatcher.max_uncommitted
        over_budget = self.held_back_count() >= HELD_BACK_BUDGET
        wanted: dict[TP, bool] = {}
        for tp, state in self._parts.items():
            if state.last is not None and state.committed is not None:
                window = state.last + 1 - state.committed
                if not state.backpressured and window >= limit:
                    state.backpressured = True
                elif state.backpressured and window <= limit // 2:
                    state.backpressured = False
            wanted[tp] = self.held or state.backpressured or (over_budget and bool(state.held_back))
        to_pause, to_resume = self._pauses.changes(wanted)
        if to_pause:
            consumer.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            consumer.resume([TopicPartition(t, p) for t, p in to_resume])

    def _store(self, consumer: Consumer, offsets: dict[TP, int], epochs: dict[TP, int]) -> None:
        current = [
            TopicPartition(t, p, o)
            for (t, p), o in offsets.items()
            if (state := self._parts.get((t, p))) is not None and state.epoch == epochs.get((t, p))
        ]
        if not current:
            return
        try:
            consumer.store_offsets(offsets=current)
        except KafkaException as exc:
            log.warning("storing offsets: %s", exc)

    def _on_stats(self, text: str) -> None:
        try:
            self.stats = digest_stats(text, self._parts)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("could not read the client statistics: %s", exc)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("commit failed: %s", error.str())
            return
        for tp in partitions:
            state = self._parts.get((tp.topic, tp.partition))
            if state is not None and tp.error is None and tp.offset >= 0:
                state.committed = tp.offset

    # -- rebalance callbacks (run inside consume(), on this thread) -------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._parts[tp] = _PartitionState(self._epoch)
        self._pauses.assigned(tps)  # resumed or paused explicitly before the next fetch
        log.info("assigned %d partitions (epoch %d)", len(tps), self._epoch)
        self._loop.call_soon_threadsafe(self._hooks.assign, tps, self._epoch)
        self._ownership_changed = True
        self.joined.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions if (p.topic, p.partition) in self._parts]
        if not tps:
            return
        offsets = self._drain({tp: self._parts[tp].epoch for tp in tps})
        self._commit(consumer, offsets)
        for tp in tps:
            self._parts.pop(tp, None)
        self._pauses.removed(tps)
        log.info("revoked %d partitions, committed %d", len(tps), len(offsets))
        self._ownership_changed = True

    def _announce(self, consumer: Consumer) -> None:
        """Tell the loop which partitions this member owns now (for its share of the rate limits).

        Called after ``consume()`` returned, never inside a rebalance callback: ``list_topics`` ends the
        client's call state, and a callback later in the same ``consume()`` would then abort."""
        self._ownership_changed = False
        owned: dict[str, int] = {}
        for topic, _ in self._parts:
            owned[topic] = owned.get(topic, 0) + 1
        try:
            metadata = consumer.list_topics(timeout=10)
            totals = {t: len(m.partitions) for t, m in metadata.topics.items() if t in self._topics}
        except KafkaException as exc:
            log.warning("could not read partition counts (rate shares unchanged): %s", exc)
            return
        self._loop.call_soon_threadsafe(self._hooks.assignment_changed, Ownership(owned, totals))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {
            tp: state.epoch
            for p in partitions
            if (state := self._parts.pop(tp := (p.topic, p.partition), None)) is not None
        }
        self._pauses.removed(lost)
        log.warning(
            "lost %d partitions; their uncommitted records will be re-read by the new owner", len(lost)
        )
        # Not awaited (the group may already have moved on): the drain closes only the trackers of
        # these epochs, so a re-assignment of the same partition that the loop sees first is untouched.
        asyncio.run_coroutine_threadsafe(self._hooks.drain(lost, time.monotonic()), self._loop)
        self._ownership_changed = True

    def _drain(self, tps: dict[TP, int] | None) -> dict[TP, int]:
        deadline = self._settings.dispatcher.drain_timeout
        future = asyncio.run_coroutine_threadsafe(
            self._hooks.drain(tps, time.monotonic() + deadline), self._loop
        )
        try:
            return future.result(timeout=deadline + 10)
        except Exception as exc:
            log.error("draining failed: %s", exc)
            return {}

    def _commit(self, consumer: Consumer, offsets: dict[TP, int]) -> None:
        """Store, then commit synchronously. Storing too keeps a later auto-commit (librdkafka commits the
        stored offsets on close and on revoke) from moving the committed offset back."""
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            consumer.store_offsets(offsets=partitions)
            consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit on revoke failed (the next owner re-reads from the last commit): %s", exc)

    def _shutdown(self, consumer: Consumer) -> None:
        """Stop fetching, drain all partitions under the deadline, commit them, then unsubscribe."""
        assigned = [TopicPartition(t, p) for t, p in self._parts]
        if assigned:
            consumer.pause(assigned)
        offsets = self._drain(None)
        self._commit(consumer, offsets)
        self._parts.clear()
        self._pauses.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
