"""The dispatcher's small HTTP server: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz`` is 200 while every poll loop (one per consumer-group member) completed a cycle within
  ``dispatcher.stall_timeout``, 503 naming the stalled group otherwise. While the process is still
  starting (reading the subscriptions topic) it is 200: liveness must not kill a slow start.
- ``/readyz`` is 200 when the dispatcher started, its shared-group member joined the group, a broker
  connection is up (librdkafka statistics; until the first arrive, joining is the evidence) and the
  poll loops are alive. Owning partitions is not required: members beyond the partition count are
  ready too.
- ``/metrics`` is the Prometheus text format (``Metrics.handler``).

Bodies are small JSON documents saying why. What they say is read through the ``StatsSource`` port
(``fanout.model.ports``).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from fanout.kafka.consumer_stats import STATS_INTERVAL_MS
from fanout.model.errors import FanoutError
from fanout.model.ports import DispatcherStats, StatsSource
from fanout.telemetry.metrics import Metrics

STATS_STALE_SECONDS = 3 * STATS_INTERVAL_MS / 1000


class ProbeServer:
    def __init__(
        self, source: StatsSource, metrics: Metrics, host: str, port: int, stall_timeout: float
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.host = host
        self.port = port
        self.stall_timeout = stall_timeout
        self._runner: web.AppRunner | None = None

    def health(self, stats: DispatcherStats | None = None) -> tuple[bool, dict[str, Any]]:
        stats = stats or self.source.snapshot(lanes=False)
        if not stats.started:
            return True, {"status": "starting"}
        now = time.monotonic()
        loops = {m.group: round(now - m.last_cycle, 3) for m in stats.members}
        stalled = [group for group, age in loops.items() if age > self.stall_timeout]
        if stalled:
            return False, {"status": "poll loop stalled", "groups": stalled, "seconds_since_cycle": loops}
        return True, {"status": "ok", "seconds_since_cycle": loops}

    def readiness(self, stats: DispatcherStats | None = None) -> tuple[bool, dict[str, Any]]:
        stats = stats or self.source.snapshot(lanes=False)
        healthy, detail = self.health(stats)
        shared = stats.shared
        if not stats.started or shared is None:
            return False, {"status": "starting"}
        if not healthy:
            return False, detail
        if not shared.joined:
            return False, {"status": "not joined", "group": shared.group}
        at = shared.statistics_at
        if at and time.monotonic() - at < STATS_STALE_SECONDS and not shared.brokers_up:
            return False, {"status": "no broker connection", "group": shared.group}
        return True, {"status": "ok", "group": shared.group, "partitions": shared.assigned}

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, body = self.health()
        return web.json_response(body, status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, body = self.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def start(self) -> None:
        server = web.Application()
        server.router.add_get("/healthz", self._healthz)
        server.router.add_get("/readyz", self._readyz)
        server.router.add_get("/metrics", self.metrics.handler)
        self._runner = web.AppRunner(server, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise FanoutError(
                f"cannot serve /healthz, /readyz and /metrics on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; "
                "set dispatcher.http_port (0 turns the server off)"
            ) from None
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
