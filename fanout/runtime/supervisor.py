"""``fanout run --workers N``: N dispatcher processes on one machine, supervised.

Each worker is ``fanout run --worker-index i`` with the same settings: a member of the same consumer
groups, with its own event loop and its own share of every rate limit. A worker that dies is
restarted (after a pause that grows while it keeps crashing). SIGTERM or SIGINT is forwarded to every
worker, which drains and commits; the supervisor exits 0 when all of them exited 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("fanout.runtime.supervisor")

CHECK_SECONDS = 0.2
MAX_BACKOFF = 30.0
STABLE_SECONDS = 60.0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    crashes: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, workers: int, worker_args: Sequence[str], stop_timeout: float) -> None:
        self._n = workers
        self._args = list(worker_args)
        self._stop_timeout = stop_timeout
        self._stopping = False
        self._workers: dict[int, _Worker] = {}

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "fanout", *self._args, "--worker-index", str(index)])

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, self._n)
        self._stopping = True
        for worker in self._workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for i in range(self._n):
            self._workers[i] = _Worker(i, self._spawn(i))
        log.info("supervising %d workers: %s", self._n, [w.proc.pid for w in self._workers.values()])
        while not self._stopping:
            self._check()
            time.sleep(CHECK_SECONDS)
        return self._stop_all()

    def _check(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            code = worker.proc.poll()
            if code is None:
                continue
            if worker.restart_at is None:
                worker.crashes = 0 if now - worker.started > STABLE_SECONDS else worker.crashes + 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** max(0, worker.crashes - 1)) if worker.crashes else 0.0
                worker.restart_at = now + delay
                log.error(
                    "worker %d (pid %d) exited with %s; restarting in %.1fs",
                    worker.index,
                    worker.proc.pid,
                    code,
                    delay,
                )
            if now >= worker.restart_at and not self._stopping:
                worker.proc = self._spawn(worker.index)
                worker.started, worker.restart_at = now, None
                log.info("worker %d restarted as pid %d", worker.index, worker.proc.pid)

    def _stop_all(self) -> int:
        deadline = time.monotonic() + self._stop_timeout
        codes: dict[int, int] = {}
        for worker in self._workers.values():
            try:
                code = worker.proc.wait(max(0.1, deadline - time.monotonic()))
                # Killed by our SIGTERM itself: it came before the worker installed any handler (the
                # `run` command does so first thing), so the worker had consumed nothing: a clean stop.
                codes[worker.index] = 0 if code == -signal.SIGTERM else code
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.proc.kill()
                codes[worker.index] = worker.proc.wait()
        log.info("all workers stopped: %s", codes)
        return 0 if all(code == 0 for code in codes.values()) else 1
