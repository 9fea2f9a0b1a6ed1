"""What the console reads from the delivery history: a small query interface and its value objects.

The console never reads the attempts topic or the index itself. It asks a ``HistoryQueries`` (set on
the application under ``HISTORY``) and renders what comes back; without one, the history-backed parts
of the pages say that the history is not available here. ``fanout.api.console.indexed``
implements it over the delivery-history index (``fanout.history.store.HistoryStore``).

Contract, for every method:

- Times are Unix epoch seconds (float); durations (``window``) are seconds counted back from now.
- A subscription without records in the window is absent from ``overview`` and gets empty ``Stats``
  (zero counts, ``None`` figures) from ``stats``; it is never an error.
- The methods are coroutines and must not block the event loop (run a blocking store in a thread).
- ``attempts`` answers newest first, at most ``limit`` rows; ``series`` answers exactly ``buckets``
  buckets, oldest first, each ``window / buckets`` seconds wide and ending now.
- Nothing returned may hold a secret, a request header or a request body (the records hold none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aiohttp import web

Outcome = Literal["delivered", "retry", "spilled", "dead_lettered", "dropped", "disabled"]
FinalState = Literal["delivered", "retry_pending", "dead_lettered", "dropped", "disabled", "in_flight"]
NOT_FAILURES: frozenset[str] = frozenset({"delivered", "spilled"})


@dataclass(frozen=True)
class Bucket:
    """One slice of a time series: what was attempted in ``[start, start + width)``."""

    start: float
    delivered: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.failed


@dataclass(frozen=True)
class Failure:
    """The last failed attempt: when, and the status or the error class it ended with."""

    at: float
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Stats:
    """One subscription over a window. ``attempts`` counts HTTP attempts (``delivered`` of them got a
    2xx, ``failed`` did not); ``dead_lettered`` counts dead-letter outcomes (with or without an
    attempt); latencies are over the attempts; ``failure_streak`` is the run of failed attempts that
    ends with the latest one (0 when the latest succeeded)."""

    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    last_success: float | None = None
    last_failure: Failure | None = None
    failure_streak: int = 0

    @property
    def success_rate(self) -> float | None:
        """Delivered over attempted, 0..1; ``None`` without attempts."""
        return self.delivered / self.attempts if self.attempts else None


@dataclass(frozen=True)
class Health:
    """A subscription's row of the overview: its stats and its series over the same window."""

    stats: Stats
    series: tuple[Bucket, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One record of the history: an HTTP attempt, or an outcome without one (``spilled``,
    ``dead_lettered`` without an attempt, ``dropped``, ``disabled``). ``response`` is the first bytes of
    the response body as text (possibly empty); ``not_before`` is set for ``retry``; ``reason`` for
    ``dead_lettered``."""

    event_id: str
    subscription: str
    attempt: int
    at: float
    outcome: Outcome
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response: str = ""
    not_before: float | None = None
    reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome not in NOT_FAILURES


@dataclass(frozen=True)
class Timeline:
    """One subscription's part of an event: its records oldest first, and where the event stands for
    it now (``until`` is the not-before time of a pending retry)."""

    subscription: str
    attempts: tuple[Attempt, ...]
    state: FinalState
    until: float | None = None


@dataclass(frozen=True)
class EventHistory:
    """An event and, per matching subscription, its timeline."""

    event_id: str
    type: str | None = None
    time: float | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timelines: tuple[Timeline, ...] = field(default=())


class HistoryQueries(Protocol):
    """The queries the console's pages need (see the module's contract)."""

    async def overview(self, window: float, with_latency: bool = True) -> Mapping[str, Health]:
        """Every subscription with records in the window, by id: its stats (``series`` may be empty,
        ``last_failure`` may lack its status and, without ``with_latency``, the latency figures may be
        ``None``: ``detail`` fills them in for the rows shown)."""
        ...

    async def detail(self, shown: Mapping[str, Stats], window: float, buckets: int) -> Mapping[str, Health]:
        """The rows of ``overview`` a page shows, completed: each one's series, last failure and
        latency figures."""
        ...

    async def stats(self, subscription: str, window: float) -> Stats:
        """One subscription's stats over the window."""
        ...

    async def series(self, subscription: str, window: float, buckets: int) -> Sequence[Bucket]:
        """One subscription's attempts per bucket over the window, oldest first."""
        ...

    async def attempts(self, subscription: str, *, failures_only: bool, limit: int) -> Sequence[Attempt]:
        """One subscription's latest records, newest first; ``failures_only`` keeps those that ``failed``."""
        ...

    async def event(self, event_id: str) -> EventHistory | None:
        """An event's timelines, or ``None`` when the history has no record of it."""
        ...


HISTORY: web.AppKey[HistoryQueries] = web.AppKey("console_history")
