"""CPU time and memory of a process and its children, sampled in the background from /proc."""

from __future__ import annotations

import bisect
import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.1


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        pass
    return found


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime of the process itself


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class ProcessMonitor:
    """Samples the summed CPU seconds of a process tree; ``peak_rss_kib`` is the largest VmHWM of one
    process in the tree (each worker's peak, not their sum)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.peak_rss_kib = 0
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        for pid in _tree(self.root):
            try:
                self._seen[pid] = _cpu(pid)
                self.peak_rss_kib = max(self.peak_rss_kib, _hwm_kib(pid))
            except (OSError, IndexError):
                continue
        self.times.append(time.time())
        self.cpu.append(sum(self._seen.values()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(SAMPLE_SECONDS)

    def cpu_at(self, when: float) -> float:
        """CPU seconds used by the tree up to ``when`` (linear between samples)."""
        i = bisect.bisect_left(self.times, when)
        if i <= 0:
            return self.cpu[0]
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1, c0, c1 = self.times[i - 1], self.times[i], self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0) if t1 > t0 else c1
