"""Source replays as background jobs: ``POST /v1/subscriptions/{id}/replay`` and ``GET /v1/jobs/{id}``.

A job runs in a thread of this instance (``fanout.control.jobs.run_source_replay``) and writes its start,
progress and end to the ops topic, so ``GET /v1/jobs/{id}`` on any instance can answer: from memory
here, else from the ops topic. A job outlives no process: one whose instance stopped stays
``running`` in the ops topic; start it again. At most ``MAX_RUNNING_JOBS`` run at once per instance;
more wait their turn (``running``, nothing scanned yet).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from aiohttp import web

from fanout.api.context import api
from fanout.api.problems import Problem, not_found
from fanout.api.validation import BODY
from fanout.config import Settings
from fanout.control.jobs import Job, find_job, new_job_id, run_source_replay
from fanout.model.subscription import Subscription
from fanout.pipeline.ops import OpsEvents

routes = web.RouteTableDef()
MAX_RUNNING_JOBS = 4


def epoch_ms(text: str, field: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Problem(
            400, f"{field} is not an RFC 3339 date-time", errors=[{"field": field, "message": "invalid"}]
        ) from None
    if when.tzinfo is None:
        raise Problem(
            400, f"{field} needs a time zone (e.g. Z)", errors=[{"field": field, "message": "no zone"}]
        )
    try:
        return int(when.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise Problem(
            400, f"{field} is out of range", errors=[{"field": field, "message": "out of range"}]
        ) from None


class Jobs:
    def __init__(self, settings: Settings, ops: OpsEvents) -> None:
        self.settings = settings
        self.ops = ops
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Future[Job]] = set()
        self._stop = threading.Event()
        # Jobs run long: their own threads, so they never starve the requests' executor.
        self._threads = ThreadPoolExecutor(MAX_RUNNING_JOBS, thread_name_prefix="fanout-job")

    def start(self, sub: Subscription, since_ms: int, until_ms: int) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(new_job_id(), sub.id, since_ms, until_ms, int(time.time() * 1000))
        self.jobs[job.id] = job

        def emit(event_type: str, key: str, data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self.ops.emit, event_type, key, data)

        task = loop.run_in_executor(
            self._threads, run_source_replay, self.settings, job, sub, emit, None, self._stop
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        return await asyncio.get_running_loop().run_in_executor(None, find_job, self.settings, job_id)

    async def close(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        self._threads.shutdown(wait=False)


@routes.post("/v1/subscriptions/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    app = api(request)
    sub_id = request.match_info["id"]
    sub = app.live.get(sub_id)
    if sub is None:
        raise not_found(f"subscription {sub_id!r}")
    body = request[BODY]
    since = epoch_ms(body["since"], "body/since")
    until = epoch_ms(body["until"], "body/until") if "until" in body else int(time.time() * 1000)
    if until <= since:
        raise Problem(400, "until must be later than since")
    job = app.jobs.start(sub, since, until)
    return web.json_response(job.view(), status=202, headers={"Location": f"/v1/jobs/{job.id}"})


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    try:
        job = await api(request).jobs.get(job_id)
    except Exception as exc:
        raise Problem(503, f"the ops topic could not be read: {type(exc).__name__}") from None
    if job is None:
        raise not_found(f"job {job_id!r}")
    return web.json_response(job.view())
