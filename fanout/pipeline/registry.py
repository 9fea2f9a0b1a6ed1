"""Lanes by subscription id: the part shared by the unordered lanes (``fanout.pipeline.flow.Lanes``) and
the key-ordered ones (``fanout.pipeline.ordered.KeyedLanes``).

A lane is created on first use; when a subscription changes, its lane takes the new definition and this
member's share of its rate. ``ready`` is the registry's side of ``model.ports.BatchTarget.ready``: set
while the lanes take more records; a registry without flow control never clears it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from fanout.model.subscription import Subscription


class RatedLane(Protocol):
    sub: Subscription

    def set_share(self, share: float) -> None: ...

    def update(self, sub: Subscription) -> None: ...


L = TypeVar("L", bound=RatedLane)


class LaneRegistry(Generic[L]):
    def __init__(self) -> None:
        self._share_of: Callable[[Subscription], float] = lambda sub: 1.0
        self.by_id: dict[str, L] = {}
        self.ready = threading.Event()
        self.ready.set()

    def _new_lane(self, sub: Subscription, share: float) -> L:
        raise NotImplementedError

    def get(self, sub: Subscription) -> L:
        lane = self.by_id.get(sub.id)
        if lane is None:
            lane = self.by_id[sub.id] = self._new_lane(sub, self._share_of(sub))
        elif lane.sub is not sub:
            lane.set_share(self._share_of(sub))
            lane.update(sub)
        return lane

    def set_shares(self, share_of: Callable[[Subscription], float]) -> None:
        """Each subscription's share of its rate on this member (see ``fanout.model.ownership``)."""
        self._share_of = share_of
        for lane in self.by_id.values():
            lane.set_share(share_of(lane.sub))
