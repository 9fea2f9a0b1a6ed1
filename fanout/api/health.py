"""``/healthz`` (the process answers), ``/readyz`` (the broker answered recently and the subscriptions
topic is being followed; it also reports the delivery-history index's lag, which it does not wait for),
``/openapi.json``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from fanout.api.context import api
from fanout.api.openapi import served_json
from fanout.config import Settings
from fanout.kafka.topics import admin_client, broker_reachable

if TYPE_CHECKING:
    from fanout.api.live import LiveSubscriptions

log = logging.getLogger("fanout.api.health")

PROBE_INTERVAL = 5.0
PROBE_TIMEOUT = 5.0
STALE_AFTER = 3 * PROBE_INTERVAL

routes = web.RouteTableDef()


class BrokerProbe:
    """Asks the broker for metadata every ``PROBE_INTERVAL`` seconds, in a thread."""

    def __init__(self, settings: Settings, live: LiveSubscriptions) -> None:
        self._admin = admin_client(settings)
        self._topic = settings.topics.subscriptions
        self.live = live
        self.last_ok = float("-inf")

    async def check(self) -> bool:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, broker_reachable, self._admin, self._topic, PROBE_TIMEOUT)
        if ok:
            self.last_ok = time.monotonic()
        else:
            log.warning("broker probe: no answer within %gs", PROBE_TIMEOUT)
        return ok

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            await self.check()

    @property
    def broker_ok(self) -> bool:
        return time.monotonic() - self.last_ok < STALE_AFTER


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    probe = api(request).probe
    broker, subs = probe.broker_ok, probe.live.healthy
    ready = broker and subs
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "broker": broker,
        "subscriptions": subs,
    }
    history = api(request).history
    if history is not None:
        status = history.status()
        body["history"] = {
            "caught_up": status.caught_up,
            "lag_records": status.lag_records,
            "lag_seconds": status.lag_seconds,
            "error": status.error,
        }
    return web.json_response(body, status=200 if ready else 503)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=served_json(), content_type="application/json")
