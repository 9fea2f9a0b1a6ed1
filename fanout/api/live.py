"""The subscriptions as this API instance sees them, and its writes through ``SubscriptionStore``.

Reads are served from memory: a ``TableWatcher`` follows the subscriptions topic. Writes go through
the store's compare-and-set transactions (in a thread: the store blocks), and a write returns only
after the watcher has read it back, so a client that writes and then reads (here) sees its write.
"""

from __future__ import annotations

import asyncio

from fanout.config import Settings
from fanout.control.plans import Change, Plan
from fanout.control.subscriptions import SubscriptionStore, TableWatcher
from fanout.model.errors import FanoutError
from fanout.model.subscription import Subscription

STARTUP_TIMEOUT = 60.0
READ_BACK_TIMEOUT = 30.0


class LiveSubscriptions:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SubscriptionStore(settings)
        self._subs: dict[str, Subscription] = {}
        self._position = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.watcher = TableWatcher(settings, self._changed, self._moved)

    @property
    def healthy(self) -> bool:
        return self.watcher.ready.is_set() and self.watcher.error is None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.watcher.start()
        ready = await self._loop.run_in_executor(None, self.watcher.ready.wait, STARTUP_TIMEOUT)
        if not ready or self.watcher.error is not None:
            await self.stop()
            raise FanoutError(
                f"could not read {self.settings.topics.subscriptions}: {self.watcher.error or 'timed out'}"
            )

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.watcher.stop)
        await loop.run_in_executor(None, self.store.close)

    def _changed(self, subs: dict[str, Subscription]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._set, subs)

    def _set(self, subs: dict[str, Subscription]) -> None:
        self._subs = subs

    def _moved(self, position: int) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._advance, position)

    def _advance(self, position: int) -> None:
        self._position = max(self._position, position)
        waiting = []
        for offset, future in self._waiters:
            if offset < self._position:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((offset, future))
        self._waiters = waiting

    def get(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    def all(self) -> list[Subscription]:
        return sorted(self._subs.values(), key=lambda s: s.id)

    async def read_back(self, changes: list[Change]) -> None:
        """Wait until the watcher has read ``changes`` (so reads here see them)."""
        offset = max((c.offset for c in changes), default=-1)
        if offset < self._position:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, future))
        try:
            await asyncio.wait_for(future, READ_BACK_TIMEOUT)
        except TimeoutError:
            raise FanoutError("the write was committed but not read back in time") from None

    async def transact(self, plan: Plan) -> list[Change]:
        """Run a compare-and-set plan (in a thread), then wait until it was read back."""
        changes = await asyncio.get_running_loop().run_in_executor(None, self.store.transact, plan)
        await self.read_back(changes)
        return changes
