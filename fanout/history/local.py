"""The history for a command line: the index at ``history.path`` brought up to date, then read.

``up_to_date(settings)`` indexes the attempts topic into ``history.path`` until it has read it to its
end (the first run reads the whole topic; later runs only what was added since, from the offsets the
index stores), then stops indexing and returns the store to query. When another process keeps that
file (a ``fanout api`` on this host), it is read as that process keeps it, with ``shared`` set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fanout.config import Settings
from fanout.history.indexer import HistoryIndexer
from fanout.history.lock import IndexInUse
from fanout.history.store import HistoryStore
from fanout.model.errors import FanoutError

WAIT_STEP = 0.1


class HistoryNotRead(FanoutError):
    """The attempts topic could not be read to its end in time (or reading it failed)."""


@dataclass(frozen=True, slots=True)
class LocalHistory:
    store: HistoryStore
    shared: str | None  # who keeps the file, when another process does


def up_to_date(settings: Settings, timeout: float) -> LocalHistory:
    """The index at ``history.path``, having read the attempts topic to its end (``HistoryNotRead``
    after ``timeout`` seconds)."""
    store = HistoryStore(settings.history.path, settings.history.retention, role="fanout cli")
    indexer = HistoryIndexer(settings, store, poll_seconds=0.1, metadata_interval=1.0)
    try:
        indexer.start()
    except IndexInUse as exc:
        if not settings.history.path.exists():
            raise HistoryNotRead(str(exc)) from None
        return LocalHistory(HistoryStore(settings.history.path, settings.history.retention), exc.holder)
    try:
        deadline = time.monotonic() + timeout
        while not indexer.caught_up.wait(WAIT_STEP):
            if indexer.error is not None:
                raise HistoryNotRead(f"reading {indexer.topic} failed: {indexer.error}")
            if time.monotonic() > deadline:
                status = indexer.status()
                left = "" if status.lag_records is None else f" ({status.lag_records} records left)"
                raise HistoryNotRead(
                    f"{indexer.topic} was not read to its end within {timeout:g}s{left}; does it exist? "
                    "(`fanout topics create`); a larger --timeout lets a first run index a long topic"
                )
    finally:
        indexer.stop()
    return LocalHistory(store, None)
