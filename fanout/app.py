"""Composition root of ``fanout run``: builds the pipeline from Settings and owns its lifecycle.

Start: read the subscriptions topic to its end, build the routing table, start the producer, the
HTTP sender and the consumer thread. Run: records flow through the dispatcher; every
``STORE_INTERVAL`` the committable offsets are stored (librdkafka commits them every
``dispatcher.commit_interval_ms``). Stop (SIGTERM/SIGINT or ``stop()``): stop fetching, drain
in-flight work under ``dispatcher.drain_timeout``, commit, exit 0. A fatal Kafka error stops the
process with a clear message (exit 1); a restart replays from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiohttp.abc import AbstractResolver

from fanout.config import Settings
from fanout.errors import FanoutError, FatalKafkaError
from fanout.http.sender import HttpSender
from fanout.kafka.consumer import ConsumerHooks, ConsumerThread
from fanout.kafka.producer import AsyncProducer
from fanout.kafka.subscriptions import SubscriptionStore, TableWatcher
from fanout.model import Delivery
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.lanes import LaneLimits, Lanes
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.route import RoutingTable
from fanout.pipeline.settle import Settler
from fanout.subscription import Subscription

log = logging.getLogger("fanout.app")

STORE_INTERVAL = 0.1
STARTUP_TIMEOUT = 60.0


class DispatcherApp:
    """One member of the dispatcher consumer group."""

    def __init__(
        self, settings: Settings, resolver: AbstractResolver | None = None, handle_signals: bool = True
    ) -> None:
        self.settings = settings
        self._handle_signals = handle_signals
        self._resolver = resolver
        self._stop = asyncio.Event()
        self._fatal: FatalKafkaError | None = None
        self._disabled: dict[str, int] = {}
        self.dispatcher: Dispatcher | None = None
        self.consumer: ConsumerThread | None = None
        self.store = SubscriptionStore(settings)
        self.started = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _hold(self, held: bool) -> None:
        if self.consumer is not None:
            self.consumer.hold(held)

    def _fail(self, error: FatalKafkaError) -> None:
        self._fatal = error
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
        settings = self.settings
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
        table = await tables.get()

        producer = AsyncProducer(settings, loop, on_fatal=self._fail)
        sender = HttpSender(settings.delivery, self._resolver)
        await sender.start()
        ops = OpsEvents(producer, settings.topics.ops)
        settler = Settler(settings, producer, ops, on_gone=self._disable)
        d = settings.delivery
        limits = LaneLimits(d.lane_queue, d.lane_max_wait, d.breaker_failures, d.breaker_cooldown)
        lanes = Lanes(sender.send, settler.done, limits, settings.dispatcher.max_queued, self._hold)
        retry_topics = [settings.topics.retry(i) for i in range(len(settings.retry.tiers))]
        dispatcher = self.dispatcher = Dispatcher(table, lanes, settler, retry_topics)
        self._warn_unsupported(table)
        consumer = self.consumer = ConsumerThread(
            settings,
            self._source_topics(table),
            retry_topics,
            loop,
            ConsumerHooks(
                assign=dispatcher.assign,
                records=dispatcher.on_records,
                drain=dispatcher.drain,
                fatal=self._fail,
            ),
        )
        consumer.start()
        self.started.set()
        log.info("dispatcher started: %d subscriptions, group %s", len(table), settings.dispatcher.group_id)
        try:
            await self._serve(tables, consumer, dispatcher, watcher)
        finally:
            consumer.stop()
            await consumer.finished
            await producer.close()
            await sender.close()
            await loop.run_in_executor(None, watcher.stop)
            await loop.run_in_executor(None, self.store.close)
        if self._fatal is not None:
            log.critical("stopping: %s", self._fatal)
            return 1
        log.info("dispatcher stopped: %s", dict(settler.stats))
        return 0

    async def _serve(
        self,
        tables: asyncio.Queue[RoutingTable],
        consumer: ConsumerThread,
        dispatcher: Dispatcher,
        watcher: TableWatcher,
    ) -> None:
        stored: dict[tuple[str, int], int] = {}
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STORE_INTERVAL)
            while not tables.empty():
                self._swap(tables.get_nowait(), consumer, dispatcher)
            dispatcher.lanes.expire()
            if watcher.error is not None:
                self._fail(
                    FatalKafkaError(f"following {self.settings.topics.subscriptions}: {watcher.error}")
                )
            offsets = dispatcher.committable()
            changed = {tp: o for tp, o in offsets.items() if stored.get(tp) != o}
            if changed:
                consumer.store(changed, {tp: dispatcher.trackers[tp].epoch for tp in changed})
                stored.update(changed)

    def _source_topics(self, table: RoutingTable) -> set[str]:
        return set(table.topics) | set(self.settings.dispatcher.topics)

    def _swap(self, table: RoutingTable, consumer: ConsumerThread, dispatcher: Dispatcher) -> None:
        table = self._with_local_disables(table)
        old_topics = self._source_topics(dispatcher.table)
        dispatcher.set_table(table)
        self._warn_unsupported(table)
        if self._source_topics(table) != old_topics:
            consumer.subscribe(self._source_topics(table))
        log.info("routing table updated: %d subscriptions", len(table))

    def _warn_unsupported(self, table: RoutingTable) -> None:
        for sub in table.subscriptions.values():
            if sub.ordering == "key":
                log.warning("subscription %s asks for key ordering, which is not implemented yet", sub.id)

    # -- 410 Gone: disable now, persist in the topic, tell the ops topic ---------------------------

    def _with_local_disables(self, table: RoutingTable) -> RoutingTable:
        """Keep subscriptions disabled here until the topic shows the disable (or a newer version)."""
        if not self._disabled:
            return table
        subs = dict(table.subscriptions)
        for sub_id, version in list(self._disabled.items()):
            sub = subs.get(sub_id)
            if sub is None or sub.version > version:
                del self._disabled[sub_id]
            elif sub.enabled:
                subs[sub_id] = _disabled(sub, "endpoint answered 410 Gone")
        return RoutingTable.build(subs.values())

    def _disable(self, delivery: Delivery) -> None:
        sub = delivery.subscription
        dispatcher = self.dispatcher
        if sub.id in self._disabled or dispatcher is None:
            return
        reason = f"endpoint answered 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        self._disabled[sub.id] = sub.version
        dispatcher.set_table(self._with_local_disables(dispatcher.table))
        dispatcher.settler.ops.disabled(delivery, reason)
        log.warning("disabling subscription %s: %s", sub.id, reason)
        future = asyncio.get_running_loop().run_in_executor(
            None, lambda: self.store.update(sub.id, lambda s: _disabled(s, reason))
        )

        def persisted(f: asyncio.Future[Subscription]) -> None:
            if f.exception() is not None:
                log.error("could not persist the disable of %s: %s", sub.id, f.exception())

        future.add_done_callback(persisted)


def _disabled(sub: Subscription, reason: str) -> Subscription:
    return sub.model_copy(update={"enabled": False, "disabled_reason": reason})


def run_dispatcher(settings: Settings) -> int:
    """Run one dispatcher until SIGTERM/SIGINT; the process exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.run(DispatcherApp(settings).run())
    return uvloop.run(DispatcherApp(settings).run())
