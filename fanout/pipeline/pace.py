"""A lane's pace: how soon it can start a delivery, and when one it cannot keep should come back.

A lane is paced by its token bucket (this member's share of the subscription's rate) and by its
endpoint: at most ``max_in_flight`` requests at a time, each taking the latency the lane sees (a moving
average over answered requests). A busy event loop makes that latency longer: every request waits for
the loop at least twice (to be written, and to have its answer read), so ``LoopLag`` measures how late
the loop runs and twice its recent peak is taken off to judge the *endpoint* (``lag`` arguments). Whether a
lane may keep a delivery is the endpoint's question; when a spilled delivery comes back is the lane's
real pace, busy loop included.

``Pace.wait`` says how long a delivery with ``ahead`` deliveries queued before it will wait to start; a
lane queues a new delivery only when that is within ``max_wait``. A delivery it cannot keep *spills*
with the delay ``Pace.schedule`` returns: after what the lane queues, after the deliveries it already
spilled and that are not back yet (its *horizon*), and after a breaker's cool-down. Successive spills
of one lane are spaced at its pace, so they come back at the rate it can take them rather than all at
once, and each comes back ``lead`` seconds early (never before the cool-down ends) so the lane does not
idle between two of them.

A request out for longer than ``max_wait`` beyond the loop's recent peak lag is the endpoint's doing
(the lane is *stalled*); a queue that only waits for tokens, or for a busy loop, is fanout's pace.
"""

from __future__ import annotations

import asyncio
from collections import deque

from fanout.pipeline.limits import TokenBucket

LATENCY_WEIGHT = 0.1
MIN_LATENCY = 0.001
# Spacing for a lane whose endpoint has not answered yet (its latency is unknown): 10 ms per request
# and in-flight slot. Optimistic on purpose: admission does not assume a latency it has not seen.
UNKNOWN_LATENCY = 0.01
LAG_PROBE_SECONDS = 0.05
LAG_WINDOW = 64  # probes the peak is taken over (3.2 s)


class LoopLag:
    """How late the event loop runs a timer (seconds): how long any ready callback, such as a finished
    request, waits for the loop: ``peak`` is the largest of the last ``LAG_WINDOW`` probes, taken by a
    timer that re-arms itself every ``LAG_PROBE_SECONDS`` once ``start`` was called inside a running
    loop."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._recent: deque[float] = deque(maxlen=LAG_WINDOW)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start measuring (once); a no-op outside a running loop."""
        if self._loop is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        assert self._loop is not None
        due = self._loop.time() + LAG_PROBE_SECONDS
        self._handle = self._loop.call_at(due, self._fire, due)

    def _fire(self, due: float) -> None:
        assert self._loop is not None
        self._recent.append(max(0.0, self._loop.time() - due))
        self.peak = max(self._recent)
        self._arm()


def next_due(now: float, wait: float, horizon: float, earliest: float) -> float:
    """When a spilled delivery's slot comes: once the ``wait`` for what the lane queues has passed, not
    before the previous spill's slot ended (``horizon``), and not before ``earliest``."""
    return max(now + wait, horizon, earliest)


class Pace:
    """One lane's pace estimate and spill horizon (see the module docstring). Times are monotonic."""

    __slots__ = ("horizon", "latency")

    def __init__(self) -> None:
        self.latency: float | None = None
        self.horizon = 0.0

    def answered(self, seconds: float) -> None:
        """A request was answered ``seconds`` after it started."""
        sample = max(MIN_LATENCY, seconds)
        latency = self.latency
        self.latency = sample if latency is None else latency + LATENCY_WEIGHT * (sample - latency)

    def rate(self, max_in_flight: int, bucket: TokenBucket | None, stalled: float = 0.0) -> float:
        """Deliveries per second the lane can start: its bucket's rate or ``max_in_flight`` per latency,
        whichever is lower. ``stalled`` is how long its oldest request has been out: the endpoint is at
        least that slow now."""
        latency = max(self.latency or UNKNOWN_LATENCY, stalled, MIN_LATENCY)
        rate = max_in_flight / latency
        return min(rate, bucket.rate) if bucket is not None else rate

    def wait(
        self,
        ahead: int,
        in_flight: int,
        max_in_flight: int,
        bucket: TokenBucket | None,
        stalled: float = 0.0,
        lag: float = 0.0,
    ) -> float:
        """Seconds until a delivery with ``ahead`` queued before it can start: until the bucket has a
        token for it, and until an in-flight slot frees for it (none assumed while the latency is
        unknown and the lane is not ``stalled``). With the loop's ``lag``, the endpoint's share only."""
        wait = bucket.time_until(ahead + 1) if bucket is not None else 0.0
        latency = max((self.latency or 0.0) - 2 * lag, stalled)
        if latency > 0:
            behind = ahead + in_flight + 1 - max_in_flight
            if behind > 0:
                wait = max(wait, behind * latency / max_in_flight)
        return wait

    def keep(self, max_wait: float, max_in_flight: int, bucket: TokenBucket | None, stalled: float) -> int:
        """How many queued deliveries can start within ``max_wait`` while the endpoint is ``stalled``."""
        return int(max_wait * self.rate(max_in_flight, bucket, stalled))

    def schedule(
        self, now: float, wait: float, rate: float, earliest: float = 0.0, lead: float = 0.0
    ) -> float:
        """Reserve the lane's next spill slot and return the delay until the delivery should come back:
        its slot less ``lead``, but never before ``earliest`` nor before ``now``. The next slot is
        ``1 / rate`` later."""
        due = next_due(now, wait, self.horizon, earliest)
        self.horizon = due + 1 / rate
        return max(due - lead, earliest, now) - now
