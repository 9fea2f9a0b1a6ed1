"""The consumer thread: the only owner of the group ``Consumer``.

It polls in batches and submits records to the dispatcher on the event loop. Everything that touches
the consumer happens here, in one thread, in this order each cycle: commands from the loop (store
offsets, re-subscribe), the dispatcher's readiness, pauses and resumes, one ``poll()`` + ``consume()``,
and the batch submitted. The decisions are made by pure policies, applied to each fetched record by
``intake.Intake``; batches cross to the loop through ``handover.Handover``:

- **Retry tiers** (``retry_gate.RetryGate``). A retry record that is not due yet is held back here, with
  the records behind it, within ``HELD_BACK_BUDGET`` records for the whole consumer; they are handed
  over in order as they come due. Nothing is fetched twice, and the poll loop never sleeps. Records
  another group wrote are not held (the dispatcher skips them). A new group starts the tiers at their
  end (``starts.start_retry_tiers_at_end``).
- **Uncommitted window** (``window.UncommittedWindow``). Per partition, records read but not committed
  are bounded by ``max_uncommitted``, exactly: a record beyond the bound is not handed over (the
  partition is paused and rewound to it), and the partition resumes when commits bring it under half.
  A crash re-delivers at most that many.
- **Backpressure** (``model.ports.BatchTarget``, ``pauses.Hold``). While the dispatcher's ``ready`` flag
  is clear nothing is handed over: a short hold skips ``consume()``, a long one pauses every partition
  and polls, so rebalances are still served. A batch the dispatcher refused is kept and submitted
  again first when it is ready.
- **Pauses** (``pauses.PauseBook``). librdkafka keeps a partition's pause flag across an incremental
  unassign/assign, so a partition's flag is unknown when it is assigned and is set explicitly before
  it is fetched.
- **Rebalances** (``assignment.Assignment``, ``rebalance.Rebalance``) run inside ``consume()`` on this
  thread (librdkafka calls the callbacks there). A revoke blocks this thread while the loop drains the
  partitions' deliveries under the drain deadline; then their offsets are committed synchronously.
  Each assignment gets a new local epoch, and stores from an older epoch are ignored (the Python client
  does not expose the group generation). Lost partitions (the session expired) are not drained: their
  trackers are closed without a commit, by epoch, so a re-assignment of the same partition keeps its
  new tracker.
- **Health.** ``last_cycle`` is when the loop last started a cycle (``/healthz``); ``stats`` is the
  latest librdkafka statistics digest (``consumer_stats``). ``stall(seconds)`` is a test hook that
  blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from fanout.config import Settings
from fanout.kafka.assignment import Assignment
from fanout.kafka.consumer_config import consumer_config
from fanout.kafka.consumer_stats import ConsumerStats, digest_stats
from fanout.kafka.handover import Handover
from fanout.kafka.intake import HELD_POLL_SECONDS, Intake
from fanout.kafka.pauses import Hold, Holding, PauseBook
from fanout.kafka.rebalance import Drain, Rebalance, commit
from fanout.kafka.retry_gate import RetryGate
from fanout.kafka.starts import seed_offsets, start_retry_tiers_at_end
from fanout.model.errors import FatalKafkaError
from fanout.model.ownership import Ownership
from fanout.model.ports import BatchTarget

log = logging.getLogger("fanout.kafka.consumer")

TP = tuple[str, int]
HOLD_WITHOUT_PAUSE = 1.0
# Retry records not due yet that this consumer holds in memory, all partitions together. A partition
# always holds its first one (that is what gates it); past the budget, the partitions holding any pause.
HELD_BACK_BUDGET = 2000


@dataclass
class ConsumerHooks:
    """What the consumer thread calls on the event loop (besides submitting batches)."""

    assign: Callable[[list[TP], int], None]
    drain: Drain
    fatal: Callable[[FatalKafkaError], None]
    assignment_changed: Callable[[Ownership], None] = field(default=lambda ownership: None)


class ConsumerThread:
    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        retry_topics: Iterable[str],
        loop: asyncio.AbstractEventLoop,
        target: BatchTarget[Message],
        hooks: ConsumerHooks,
        group_id: str | None = None,
        instance_id: str | None = None,
        seed_from: str | None = None,
        client: Callable[[dict[str, Any]], Consumer] = Consumer,
    ) -> None:
        self._settings = settings
        self._topics = sorted(set(topics) | set(retry_topics))
        self._retry_topics = frozenset(retry_topics)
        self._loop = loop
        self._ready = target.ready
        self._fatal = hooks.fatal
        self._group_id = group_id or settings.dispatcher.group_id
        self._instance_id = instance_id
        self._seed_from = seed_from
        self._client = client
        self._batch_size = settings.dispatcher.batch_size
        self._commands: queue.SimpleQueue[Callable[[Consumer], None]] = queue.SimpleQueue()
        self._assignment = Assignment(settings.dispatcher.max_uncommitted)
        self._gate: RetryGate[Message] = RetryGate(HELD_BACK_BUDGET)
        self._pauses = PauseBook()
        self._hold = Hold(HOLD_WITHOUT_PAUSE)
        self._handover: Handover[Message] = Handover(loop, target)
        self._intake = Intake(self._assignment, self._gate, self._pauses, self._retry_topics, self._group_id)
        self._stop = threading.Event()
        self.joined = threading.Event()
        self._rebalance = Rebalance(
            loop,
            self._assignment,
            self._pauses,
            self._forget,
            hooks.assign,
            hooks.drain,
            hooks.assignment_changed,
            settings.dispatcher.drain_timeout,
            self.joined,
        )
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

    def store(self, offsets: dict[TP, int], epochs: dict[TP, int]) -> None:
        self._commands.put(lambda c: self._store(c, offsets, epochs))

    def subscribe(self, topics: Iterable[str]) -> None:
        wanted = sorted(set(topics) | self._retry_topics)
        self._commands.put(lambda c: self._subscribe(c, wanted))

    @property
    def assigned(self) -> int:
        return len(self._assignment)

    def paused_partitions(self) -> frozenset[TP]:
        """The partitions this consumer has paused (read from another thread: a snapshot)."""
        return self._pauses.paused()

    def held_back_count(self) -> int:
        """Retry records held in memory until due, all partitions together."""
        return self._gate.count

    @property
    def group_id(self) -> str:
        return self._group_id

    def stall(self, seconds: float) -> None:
        """Test hook: block the poll loop for ``seconds`` (``/healthz`` must notice)."""
        self._commands.put(lambda c: time.sleep(seconds))

    # -- the thread: connect, cycle until stopped, shut down (tests drive the steps one at a time) -----

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = self.connect()
            while not self._stop.is_set():
                self.cycle(consumer)
            self.shutdown(consumer)
        except FatalKafkaError as exc:
            self._loop.call_soon_threadsafe(self._fatal, exc)
        except Exception as exc:
            log.exception("consumer thread failed")
            self._loop.call_soon_threadsafe(self._fatal, FatalKafkaError(f"consumer: {exc}"))
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except (KafkaException, RuntimeError) as exc:
                    log.warning("closing the consumer: %s", exc)
            self._loop.call_soon_threadsafe(_resolve, self.finished)

    def connect(self) -> Consumer:
        settings = self._settings
        consumer = self._client(
            consumer_config(settings, self._group_id, self._on_commit, self._instance_id, self._on_stats)
        )
        if self._seed_from is not None:
            seed_offsets(settings, consumer, self._topics, self._seed_from)
        if self._retry_topics:
            start_retry_tiers_at_end(consumer, self._topics, self._retry_topics)
        self._subscribe(consumer, self._topics)
        return consumer

    def _subscribe(self, consumer: Consumer, topics: list[str]) -> None:
        self._topics = topics
        rebalance = self._rebalance
        consumer.subscribe(
            topics, on_assign=rebalance.on_assign, on_revoke=rebalance.on_revoke, on_lost=rebalance.on_lost
        )

    def cycle(self, consumer: Consumer) -> None:
        now = self.last_cycle = time.monotonic()
        while True:
            try:
                self._commands.get_nowait()(consumer)
            except queue.Empty:
                break
        holding = self._hold.update(not self._ready.is_set(), now)
        if holding is Holding.SHORT:
            self._ready.wait(HELD_POLL_SECONDS)
            return
        handover = self._handover
        if handover.out:
            # The loop has not taken the last batch yet: fetching ahead of it would outrun its flow control.
            handover.wait_taken(HELD_POLL_SECONDS)
            return
        if holding is Holding.NO and handover.resubmit():
            return
        intake = self._intake
        intake.update_pauses(consumer, holding is Holding.LONG)
        # Block for the first record only, then take what is already fetched: a batch never waits to
        # fill up, so latency stays low at low rates and batches grow with the rate.
        first = consumer.poll(intake.poll_timeout(holding))
        messages = [first, *consumer.consume(self._batch_size - 1, 0)] if first is not None else []
        if self._assignment.changed:
            self._rebalance.announce(consumer, self._topics)
        if messages:
            self.joined.set()
        now_ms = time.time() * 1000
        flowing = holding is Holding.NO and handover.pending is None
        out = intake.release(now_ms) if flowing else []
        intake.take(consumer, messages, now_ms, out)
        if out:
            if flowing:
                handover.hand(out)
            else:
                handover.keep(out)  # handed over when the dispatcher is ready, in order

    def _store(self, consumer: Consumer, offsets: dict[TP, int], epochs: dict[TP, int]) -> None:
        current = [TopicPartition(t, p, o) for (t, p), o in self._assignment.current(offsets, epochs)]
        if not current:
            return
        try:
            consumer.store_offsets(offsets=current)
        except KafkaException as exc:
            log.warning("storing offsets: %s", exc)

    def _on_stats(self, text: str) -> None:
        try:
            self.stats = digest_stats(text, self._assignment.parts)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("could not read the client statistics: %s", exc)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("commit failed: %s", error.str())
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self._assignment.committed((tp.topic, tp.partition), tp.offset)

    def _forget(self, partitions: Collection[TP]) -> None:
        """Drop what this thread holds of partitions that changed hands: held retry records and records
        of a refused batch (the next owner, or the new assignment, fetches them again)."""
        self._gate.drop(partitions)
        self._handover.forget(partitions)

    def shutdown(self, consumer: Consumer) -> None:
        """Stop fetching, drain all partitions under the deadline, commit them (then ``close`` leaves)."""
        assigned = [TopicPartition(t, p) for t, p in self._assignment.parts]
        if assigned:
            consumer.pause(assigned)
        commit(consumer, self._rebalance.drain(None))
        self._assignment.clear()
        self._pauses.clear()
        self._gate.clear()
        self._handover.pending = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
