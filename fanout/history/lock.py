"""One writer per index file: the process that indexes into ``history.path`` holds an exclusive lock on
``<path>.lock`` (``flock``; released when the process ends, however it ends).

Two processes indexing into one file would each resume from the offsets they read at start and index
the same records twice. The API holds the lock for its life, and a second ``fanout api`` given the
same ``history.path`` fails at start. The lock file names its holder (``role`` and pid) for the error
message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class IndexInUse(Exception):
    """Another process holds the index's lock; ``holder`` is what it wrote there (e.g. ``api pid 42``)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"the history index {path} is kept by another process ({holder or 'unknown'})")
        self.path = path
        self.holder = holder


def lock_path(index: Path) -> Path:
    return index.with_name(index.name + ".lock")


class IndexLock:
    """The lock of the index at ``path``; ``acquire()`` raises ``IndexInUse`` when it is held."""

    def __init__(self, path: Path, role: str) -> None:
        self.path = lock_path(path)
        self.index = path
        self.role = role
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexInUse(self.index, holder_of(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.role} pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def holder_of(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[:100]
    except OSError:
        return ""
