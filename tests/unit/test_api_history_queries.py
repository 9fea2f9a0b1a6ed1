"""How ``fanout.api.history.History`` runs queries: off the event loop, on its own threads, refused
with a 503 while the index has not caught up or when ``MAX_PENDING`` queries are already in progress."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fanout.api import history as api_history
from fanout.api.history import History
from fanout.api.problems import Problem
from fanout.history.status import HistoryStatus


class FakeIndexer:
    def __init__(self, caught_up: bool = True) -> None:
        self.store = object()
        self.caught_up = caught_up

    def status(self) -> HistoryStatus:
        return HistoryStatus(
            lag_records=0 if self.caught_up else 7, lag_seconds=0.0, caught_up=self.caught_up
        )


def history(caught_up: bool = True) -> History:
    return History(FakeIndexer(caught_up), 0)  # type: ignore[arg-type]


async def test_a_query_runs_on_a_history_thread_not_the_event_loop() -> None:
    h = history()
    loop_thread = threading.get_ident()
    ran_on = await h.query(threading.current_thread)
    assert ran_on.ident != loop_thread and ran_on.name.startswith("fanout-history-query")


async def test_until_the_index_caught_up_queries_are_503_with_retry_after() -> None:
    with pytest.raises(Problem) as caught:
        await history(caught_up=False).query(lambda: 1)
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]
    assert "7 records to go" in caught.value.detail


async def test_queries_beyond_the_bound_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_history, "MAX_PENDING", 3)
    h = history()
    release = threading.Event()
    started = [asyncio.ensure_future(h.query(lambda: release.wait(30))) for _ in range(3)]
    await asyncio.sleep(0)  # each task runs up to its thread hand-off
    assert h.pending == 3
    with pytest.raises(Problem) as caught:
        await h.query(lambda: 1)
    assert caught.value.status == 503
    release.set()
    assert await asyncio.gather(*started) == [True, True, True]
    assert h.pending == 0 and await h.query(lambda: 2) == 2
