"""Background jobs (source replays): their state, how they run, and how any instance reads them back.

A job's start, progress (at most every ``PROGRESS_EVERY`` seconds) and end are written to the ops topic
as ``fanout.job.started`` / ``fanout.job.progress`` / ``fanout.job.finished`` events keyed by the job
id, each carrying the whole job view. The id embeds its creation time (``job_<epoch ms, hex>_<random>``),
so ``find_job`` reads the ops topic only from shortly before then.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fanout.config import Settings
from fanout.control.replays import ReplayProgress, replay_source
from fanout.kafka.ranges import RangeReader
from fanout.model.event import iso_time
from fanout.model.subscription import Subscription
from fanout.pipeline.decode import parse_time

log = logging.getLogger("fanout.control.jobs")

STARTED = "fanout.job.started"
PROGRESS = "fanout.job.progress"
FINISHED = "fanout.job.finished"
PROGRESS_EVERY = 1.0
LOOKBACK_MS = 60_000

Emit = Callable[[str, str, dict[str, Any]], None]


def new_job_id() -> str:
    return f"job_{int(time.time() * 1000):x}_{secrets.token_hex(4)}"


def job_time_ms(job_id: str) -> int | None:
    parts = job_id.split("_")
    try:
        return int(parts[1], 16) if len(parts) == 3 and parts[0] == "job" else None
    except ValueError:
        return None


@dataclass
class Job:
    id: str
    subscription: str
    since_ms: int
    until_ms: int
    started_ms: int
    kind: str = "source-replay"
    status: str = "running"
    total: int = 0
    scanned: int = 0
    matched: int = 0
    written: int = 0
    finished_ms: int | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subscription": self.subscription,
            "status": self.status,
            "since": iso_time(self.since_ms / 1000),
            "until": iso_time(self.until_ms / 1000),
            "total": self.total,
            "scanned": self.scanned,
            "matched": self.matched,
            "written": self.written,
            "started_at": iso_time(self.started_ms / 1000),
            "finished_at": iso_time(self.finished_ms / 1000) if self.finished_ms is not None else None,
            "error": self.error,
        }

    @classmethod
    def from_view(cls, data: dict[str, Any]) -> Job:
        def ms(text: Any) -> int:
            return int(parse_time(text, 0) * 1000)

        return cls(
            id=str(data["id"]),
            subscription=str(data["subscription"]),
            since_ms=ms(data["since"]),
            until_ms=ms(data["until"]),
            started_ms=ms(data["started_at"]),
            kind=str(data.get("kind", "source-replay")),
            status=str(data["status"]),
            total=int(data.get("total", 0)),
            scanned=int(data.get("scanned", 0)),
            matched=int(data.get("matched", 0)),
            written=int(data.get("written", 0)),
            finished_ms=ms(data["finished_at"]) if data.get("finished_at") else None,
            error=data.get("error"),
        )


def run_source_replay(
    settings: Settings,
    job: Job,
    sub: Subscription,
    emit: Emit,
    on_progress: Callable[[Job], None] | None = None,
    stop: threading.Event | None = None,
) -> Job:
    """Run the replay (blocking), keeping ``job`` and the ops topic up to date."""
    emit(STARTED, job.id, job.view())
    last = time.monotonic()

    def progress(p: ReplayProgress) -> None:
        nonlocal last
        job.total, job.scanned, job.matched, job.written = p.total, p.scanned, p.matched, p.written
        if on_progress is not None:
            on_progress(job)
        if time.monotonic() - last >= PROGRESS_EVERY:
            emit(PROGRESS, job.id, job.view())
            last = time.monotonic()

    try:
        replay_source(settings, sub, job.since_ms, job.until_ms, progress, stop)
        job.status = "succeeded"
    except Exception as exc:
        log.exception("job %s failed", job.id)
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
    job.finished_ms = int(time.time() * 1000)
    emit(FINISHED, job.id, job.view())
    return job


def find_job(settings: Settings, job_id: str) -> Job | None:
    """The latest state of ``job_id`` as written to the ops topic by whichever instance ran it (None
    for an id from the future, or older than the ops topic's retention: its events are gone)."""
    created = job_time_ms(job_id)
    now = int(time.time() * 1000)
    oldest = now - int(settings.topics.ops_retention_hours * 3600 * 1000)
    if created is None or not oldest <= created <= now + LOOKBACK_MS:
        return None
    topic = settings.topics.ops
    key = job_id.encode()
    latest = None
    with RangeReader(settings) as reader:
        parts = reader.partitions(topic)
        starts = reader.offsets_at(topic, parts, created - LOOKBACK_MS, beginning=True)
        ends = reader.offsets_at(topic, parts, None, beginning=False)
        for record in reader.read(topic, starts, ends):
            if record.key != key:
                continue
            try:
                latest = Job.from_view(orjson.loads(record.value or b"")["data"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return latest
