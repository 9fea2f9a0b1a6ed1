"""``fanout api``: the aiohttp application and its lifecycle.

One middleware (``fanout.api.middleware``): the request's read deadline (connections are guarded by
``ApiRunner``, ``fanout.api.connections``), request counts, problem+json for every error, credential and
scope of the operation, parameters and body against the OpenAPI document. The routes are in one module
per area; ``/console/`` is the web console (``fanout.api.console``);
``/metrics`` serves this process's metrics (``fanout.telemetry``), and a ``traceparent`` sent to
``POST /v1/events`` continues into the Kafka headers.

On start: open the delivery-history index (``history.path``) and start indexing the attempts topic into
it (``fanout.api.history``), follow the subscriptions topic (reads are served from memory), start the
producer (publish, ops events), the HTTP sender (``.../test``) and the broker probe (``/readyz``); then,
as the dispatcher does (``fanout.runtime.gc_tuning``), freeze the start-up heap and let the young
generation grow (with CPython's defaults a full collection of that heap ran every few thousand requests
and paused them all for about 50 ms). On SIGTERM/SIGINT: stop accepting, finish requests in flight,
flush the producer, stop indexing, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractResolver

from fanout.api import deadletters, health, history, ingest, jobs, publish, signing_keys, subscriptions
from fanout.api.auth import AUTHENTICATOR, Authenticator
from fanout.api.connections import LIMITS, ApiRunner, ConnectionLimits
from fanout.api.console import setup_console, use_history
from fanout.api.context import API, Api
from fanout.api.health import BrokerProbe
from fanout.api.history import History
from fanout.api.idempotency import IdempotencyKeys
from fanout.api.jobs import Jobs
from fanout.api.live import LiveSubscriptions
from fanout.api.middleware import api_middleware
from fanout.api.openapi import bundle
from fanout.api.validation import OPERATIONS, operations
from fanout.config import Settings
from fanout.history.indexer import HistoryIndexer
from fanout.history.metrics import register_history_metrics
from fanout.history.otlp_logs import AttemptLogs
from fanout.history.store import HistoryStore
from fanout.http.sender import HttpSender
from fanout.kafka.producer import AsyncProducer
from fanout.kafka.topics import admin_client, publish_topic_problems
from fanout.pipeline.ops import OpsEvents
from fanout.runtime.gc_tuning import settle_heap, tune_gc
from fanout.telemetry.metrics import Metrics
from fanout.telemetry.tracing import Tracing, setup_tracing

log = logging.getLogger("fanout.api")


# A publish answers only after the broker acknowledged its record, so the producer's linger is part of
# every request's latency: 64 concurrent callers were served about 1.4x faster with 2 ms than with the
# producer's default 5 ms, at the same CPU per request; 0-1 ms cost more CPU (smaller batches).
PUBLISH_LINGER_MS = 2

# aiohttp's defaults (8190 bytes) would refuse, as text/plain, a request line with a long but valid
# query (a 1024-character key is up to 12 KB percent-encoded); keep them above the document's limits.
MAX_LINE_BYTES = 64 * 1024


def build_app(
    settings: Settings, resolver: AbstractResolver | None = None, tracing: Tracing | None = None
) -> web.Application:
    metrics = Metrics("fanout-api")
    app = web.Application(
        middlewares=[api_middleware(metrics.meter)],
        client_max_size=settings.api.max_body_bytes,
        handler_args={"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES},
    )
    app[LIMITS] = ConnectionLimits(settings.api.read_timeout, settings.api.max_connections_per_client)
    app[OPERATIONS] = operations(bundle())
    app[AUTHENTICATOR] = Authenticator(settings.api)
    for module in (health, publish, ingest, subscriptions, signing_keys, deadletters, jobs, history):
        app.router.add_routes(module.routes)
    store = HistoryStore(settings.history.path, settings.history.retention, role="fanout api")
    logs = AttemptLogs() if settings.history.otlp_logs else None
    deliveries = History(HistoryIndexer(settings, store, logs=logs), settings.history.payload_bytes)
    register_history_metrics(metrics.meter, deliveries.status)
    app.router.add_get("/metrics", metrics.handler)
    setup_console(app, settings.console)
    if settings.console.enabled:
        use_history(app, store)
    app.on_cleanup.append(lambda _app: _shutdown(metrics))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        live = LiveSubscriptions(settings)
        await live.start()
        timeout_ms = int(settings.api.produce_timeout * 1000)
        producer = AsyncProducer(
            settings, loop, extra={"message.timeout.ms": timeout_ms, "linger.ms": PUBLISH_LINGER_MS}
        )
        sender = HttpSender(settings.delivery, resolver)
        await sender.start()
        ops = OpsEvents(producer, settings.topics.ops)
        names = list(dict.fromkeys([*settings.api.topics, *(s.topic for s in settings.api.ingest.values())]))
        if names:
            admin = admin_client(settings)
            for problem in await loop.run_in_executor(None, publish_topic_problems, admin, settings, names):
                log.warning("%s", problem)
        probe = BrokerProbe(settings, live)
        await probe.check()
        probe_task = asyncio.create_task(probe.run())
        traces = tracing or setup_tracing(settings.telemetry.trace_sample_ratio, "fanout-api")
        keys = IdempotencyKeys(settings.api.idempotency_window, settings.api.idempotency_max_keys)
        api = app[API] = Api(
            settings, live, producer, sender, ops, Jobs(settings, ops), probe, traces, keys, deliveries
        )
        log.info("API ready: %d subscriptions", len(live.all()))
        try:
            yield
        finally:
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe_task
            await api.jobs.close()
            await sender.close()
            await producer.close(10)
            await live.stop()
            traces.shutdown()

    async def history_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await deliveries.start()  # first: when another process keeps the file, nothing else has started
        try:
            yield
        finally:
            await deliveries.stop()

    app.cleanup_ctx.append(history_lifecycle)
    app.cleanup_ctx.append(lifecycle)
    return app


async def _shutdown(metrics: Metrics) -> None:
    metrics.shutdown()


def runner(app: web.Application) -> web.AppRunner:
    return ApiRunner(app, access_log=None, shutdown_timeout=10)


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    app_runner = runner(build_app(settings))
    await app_runner.setup()
    site = web.TCPSite(app_runner, settings.api.host, settings.api.port)
    await site.start()
    settle_heap()
    log.info("listening on http://%s:%d/", settings.api.host, settings.api.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await app_runner.cleanup()
    return 0


def run_api(settings: Settings) -> int:
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))
