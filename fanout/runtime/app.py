"""Composition root of ``fanout run``: builds the pipeline from Settings and owns its lifecycle.

Start: read the subscriptions topic to its end, build the routing table, start the producer, the
HTTP sender and the group members: one for the shared group (every unordered subscription and the
retry tiers), one per key-ordered subscription. Run: records flow through the dispatchers; every
``TICK`` the committable offsets are stored (librdkafka commits them every
``dispatcher.commit_interval_ms``) and the routing table is swapped when the topic changed. Stop
(SIGTERM/SIGINT or ``stop()``): stop fetching, drain in-flight work under
``dispatcher.drain_timeout``, commit, exit 0. A fatal Kafka error stops the process with a clear
message (exit 1); a restart replays from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from aiohttp.abc import AbstractResolver

from fanout.config import Settings
from fanout.control.disable import Disables
from fanout.control.subscriptions import SubscriptionStore, TableWatcher
from fanout.http.sender import HttpSender
from fanout.kafka.loop_producer import LoopProducer
from fanout.kafka.producer import AsyncProducer
from fanout.kafka.topics import ProducerSizing, missing_topics, producer_sizing
from fanout.model.errors import FanoutError, FatalKafkaError
from fanout.model.ports import DispatcherStats
from fanout.model.subscription import Subscription
from fanout.pipeline.counts import SettleCounts
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import LaneLimits
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.ordered import KeyedLanes
from fanout.pipeline.route import RoutingTable
from fanout.pipeline.settle import Settler
from fanout.runtime import stats, wiring
from fanout.runtime.gc_tuning import settle_heap, tune_gc
from fanout.runtime.member import GroupMember
from fanout.telemetry.dispatcher import DispatcherTelemetry
from fanout.telemetry.metrics import Metrics
from fanout.telemetry.tracing import Tracing

log = logging.getLogger("fanout.runtime.app")

TICK = 0.1
STARTUP_TIMEOUT = 60.0


class DispatcherApp:
    """One dispatcher process (one worker): a member of the shared group and of each ordered group.
    Telemetry reads it through ``snapshot`` (the ``StatsSource`` port)."""

    def __init__(
        self,
        settings: Settings,
        resolver: AbstractResolver | None = None,
        handle_signals: bool = True,
        worker: int | None = None,
        tracing: Tracing | None = None,
        metrics: Metrics | None = None,
        own_process: bool = False,
    ) -> None:
        self.settings = settings
        self._own_process = own_process  # the process is ours alone: its garbage collector may be tuned
        self._handle_signals = handle_signals
        self._resolver = resolver
        self._worker = worker
        self._stop = asyncio.Event()
        self._fatal: FatalKafkaError | None = None
        self.counts = SettleCounts()
        self.settler: Settler  # from the start of ``run``
        self._disables: Disables | None = None
        self.table = RoutingTable.build([])
        self._sender: HttpSender | None = None
        self.main: GroupMember | None = None
        self.ordered: dict[str, GroupMember] = {}
        self._stopping: set[asyncio.Future[None]] = set()
        self.store = SubscriptionStore(settings)
        self.started = asyncio.Event()
        self.telemetry = DispatcherTelemetry(self, settings, worker, tracing, metrics)

    def stop(self) -> None:
        self._stop.set()

    def _fail(self, error: FatalKafkaError) -> None:
        self._fatal = error
        self._stop.set()

    def _instance_id(self, suffix: str = "") -> str | None:
        base = self.settings.dispatcher.instance_id
        if base is None:
            return None
        worker = f"-{self._worker}" if self._worker is not None else ""
        return f"{base}{worker}{suffix}"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
        await self.telemetry.start()
        try:
            return await self._run(loop)
        finally:
            await self.telemetry.stop()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> int:
        settings = self.settings
        telemetry = self.telemetry
        tables: asyncio.Queue[RoutingTable] = asyncio.Queue()

        def on_subscriptions(subs: dict[str, Subscription]) -> None:
            loop.call_soon_threadsafe(tables.put_nowait, RoutingTable.build(subs.values()))

        watcher = TableWatcher(settings, on_subscriptions)
        watcher.start()
        ready = await loop.run_in_executor(None, watcher.ready.wait, STARTUP_TIMEOUT)
        if not ready or watcher.error is not None:
            watcher.stop()
            raise FanoutError(
                f"could not read {settings.topics.subscriptions}: {watcher.error or 'timed out'}"
            )
        self.table = await tables.get()

        if settings.history.record != "off":
            await loop.run_in_executor(None, self._require_attempts_topic)
        sizing = await loop.run_in_executor(None, self._producer_sizing, self._source_topics(self.table))
        producer_config = {**sizing.config(), "linger.ms": settings.dispatcher.linger_ms}
        producer = AsyncProducer(settings, loop, on_fatal=self._fail, extra=producer_config)
        sender = HttpSender(settings.delivery, self._resolver, wiring.response_prefix(settings))
        await sender.start()
        sender.prepare(self.table.subscriptions.values())
        self._sender = sender
        ops = OpsEvents(producer, settings.topics.ops)
        self._disables = Disables(self.store, ops, on_change=lambda: self._swap(self.table))
        self.settler = wiring.settler(
            settings, producer, ops, on_gone=self._disables.gone, counts=self.counts
        )
        history_sink = None
        if settings.history.record != "off":
            history_sink = LoopProducer(settings, loop, on_fatal=self._fail, extra=producer_config)
            self.settler.history = wiring.attempt_log(settings, history_sink, self._member())
        telemetry.attach_settler(self.settler, settings.dispatcher.group_id)
        self._send = telemetry.send(sender.send)
        d = settings.delivery
        limits = LaneLimits(
            d.lane_queue, d.lane_max_wait, d.breaker_failures, d.breaker_cooldown, d.breaker_max_cooldown
        )
        lanes = Lanes(
            self._send,
            self.settler.done,
            limits,
            settings.dispatcher.max_queued,
            connections_per_host=d.connections_per_host,
        )
        retry_topics = [settings.topics.retry(i) for i in range(len(settings.retry.tiers))]
        unordered = self._unordered(self.table)
        self.main = GroupMember(
            settings,
            loop,
            telemetry.attach(
                Dispatcher(
                    unordered,
                    lanes,
                    self.settler,
                    retry_topics,
                    settings.dispatcher.group_id,
                    d.transform_max_bytes,
                    addressable=self.table,
                ),
                settings.dispatcher.group_id,
            ),
            self._source_topics(unordered),
            settings.dispatcher.group_id,
            self._fail,
            self._instance_id(),
        )
        if self._own_process:
            settle_heap()  # the table, its sender targets and the shared group's pipeline, as built
        self.main.start()
        self._sync_ordered(self.table)
        self.started.set()
        log.info(
            "dispatcher started: %d subscriptions, group %s", len(self.table), settings.dispatcher.group_id
        )
        try:
            await self._serve(tables, watcher)
        finally:
            await asyncio.gather(*(m.stop() for m in self.members()), *self._stopping)
            await producer.close()
            if history_sink is not None:
                await history_sink.close()
            await sender.close()
            await loop.run_in_executor(None, watcher.stop)
            await loop.run_in_executor(None, self.store.close)
        if self._fatal is not None:
            log.critical("stopping: %s", self._fatal)
            return 1
        log.info("dispatcher stopped: %s", dict(self.counts.totals()))
        return 0

    async def _serve(self, tables: asyncio.Queue[RoutingTable], watcher: TableWatcher) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK)
            while not tables.empty():
                self._swap(tables.get_nowait())
            for member in self.members():
                member.tick()
            if watcher.error is not None:
                self._fail(
                    FatalKafkaError(f"following {self.settings.topics.subscriptions}: {watcher.error}")
                )

    def _member(self) -> str:
        """The name attempt records give this process: its instance id, else host and pid."""
        return self._instance_id() or f"{socket.gethostname()}-{os.getpid()}"

    def _require_attempts_topic(self) -> None:
        topic = self.settings.topics.attempts
        if missing_topics(self.settings, [topic]):
            raise FanoutError(
                f"the attempts topic {topic} does not exist (history.record is "
                f"{self.settings.history.record}): run `fanout topics create`, or set history.record: off"
            )

    def _producer_sizing(self, sources: set[str]) -> ProducerSizing:
        """The producer's record limit, sized from the source and hand-off topics' limits (read once at
        start; a source topic added later is covered by the dead letter without value)."""
        sizing = producer_sizing(self.settings, sources)
        for warning in sizing.warnings:
            log.warning(warning)
        log.info("producer record limit: %d bytes", sizing.message_max_bytes)
        return sizing

    def members(self) -> list[GroupMember]:
        return ([self.main] if self.main is not None else []) + list(self.ordered.values())

    def snapshot(self, lanes: bool = True) -> DispatcherStats:
        """The ``StatsSource`` port telemetry reads."""
        return stats.snapshot(
            self.started.is_set(), self.counts, self.table, self.main, self.ordered.values(), lanes
        )

    # -- routing tables ------------------------------------------------------------------------

    def _source_topics(self, table: RoutingTable) -> set[str]:
        return set(table.topics) | set(self.settings.dispatcher.topics)

    @staticmethod
    def _unordered(table: RoutingTable) -> RoutingTable:
        return RoutingTable.build(s for s in table.subscriptions.values() if s.ordering != "key")

    def _swap(self, table: RoutingTable) -> None:
        assert self.main is not None
        if self._disables is not None:
            table = self._disables.overlay(table)
        self.table = table
        if self._sender is not None:
            self._sender.prepare(table.subscriptions.values())
        unordered = self._unordered(table)
        self.main.dispatcher.set_table(unordered, addressable=table)
        self.main.subscribe(self._source_topics(unordered))
        self._sync_ordered(table)
        log.info("routing table updated: %d subscriptions", len(table))

    def _sync_ordered(self, table: RoutingTable) -> None:
        """One member (own consumer group, keyed lane) per key-ordered subscription."""
        wanted = {s.id: s for s in table.subscriptions.values() if s.ordering == "key"}
        for sub_id in self.ordered.keys() - wanted.keys():
            stopping = asyncio.ensure_future(self.ordered.pop(sub_id).stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
        for sub_id, sub in wanted.items():
            existing = self.ordered.get(sub_id)
            if existing is None:
                self.ordered[sub_id] = self._ordered_member(sub)
                self.ordered[sub_id].start()
            else:
                existing.dispatcher.set_table(RoutingTable.build([sub]))
                existing.subscribe(sub.topics)

    def _ordered_member(self, sub: Subscription) -> GroupMember:
        lanes = KeyedLanes(self._send, self.settler)
        group = f"{self.settings.dispatcher.group_id}.ordered.{sub.id}"
        dispatcher = self.telemetry.attach(
            Dispatcher(
                RoutingTable.build([sub]),
                lanes,
                self.settler,
                [],
                transform_max_bytes=self.settings.delivery.transform_max_bytes,
            ),
            group,
        )
        return GroupMember(
            self.settings,
            asyncio.get_running_loop(),
            dispatcher,
            sub.topics,
            group,
            self._fail,
            self._instance_id(f".ordered.{sub.id}"),
            seed_from=self.settings.dispatcher.group_id,
        )


def run_dispatcher(settings: Settings, worker: int | None = None) -> int:
    """Run one dispatcher until SIGTERM/SIGINT; the process exit code."""
    tune_gc()
    app = DispatcherApp(settings, worker=worker, own_process=True)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.run(app.run())
    return uvloop.run(app.run())
