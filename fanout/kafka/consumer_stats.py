"""librdkafka's statistics, digested for the probes and metrics (every ``STATS_INTERVAL_MS``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

TP = tuple[str, int]
STATS_INTERVAL_MS = 5000


@dataclass(frozen=True)
class ConsumerStats:
    """A digest of librdkafka's statistics: when it came (monotonic), whether any broker connection is
    up, the group's join state, and the lag (records) of each owned partition."""

    at: float = 0.0
    brokers_up: bool = False
    join_state: str = ""
    lag: dict[TP, int] = field(default_factory=dict)


def digest_stats(text: str, owned: Iterable[TP]) -> ConsumerStats:
    stats = orjson.loads(text)
    brokers_up = any(
        b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in (stats.get("brokers") or {}).values()
    )
    owned = set(owned)
    lag: dict[TP, int] = {}
    for topic, info in (stats.get("topics") or {}).items():
        for pid, part in (info.get("partitions") or {}).items():
            tp = (topic, int(pid))
            if tp not in owned:
                continue
            value = part.get("consumer_lag", -1)
            if value < 0:
                value = part.get("consumer_lag_stored", -1)
            if value >= 0:
                lag[tp] = value
    join_state = str((stats.get("cgrp") or {}).get("join_state", ""))
    return ConsumerStats(time.monotonic(), brokers_up, join_state, lag)
