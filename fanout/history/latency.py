"""Latency histograms for the index's per-minute rollups: log-scale buckets, 10% wide.

Bucket 0 holds latencies under 1 ms; bucket b >= 1 holds [1.1^(b-1), 1.1^b) ms, up to ``TOP`` (latencies
beyond ~7 h land in it). A percentile read back is the geometric middle of its bucket: within 5% of
the true value. A histogram is stored sparse, as a JSON array ``[bucket, count, bucket, count, ...]``,
and merged in SQL through ``merge`` (registered as a function on the store's connections).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import orjson

GROWTH = 1.1
TOP = 180
_LOG = math.log(GROWTH)

Histogram = dict[int, int]


def bucket(latency_ms: float) -> int:
    if latency_ms < 1.0:
        return 0
    return min(TOP, 1 + int(math.log(latency_ms) / _LOG))


def value(b: int) -> float:
    """The latency a bucket stands for, in ms."""
    if b <= 0:
        return 0.5
    return float(GROWTH ** (b - 0.5))


def pack(hist: Histogram) -> bytes:
    return orjson.dumps([x for b in sorted(hist) for x in (b, hist[b])])


def unpack(blob: bytes | None, into: Histogram | None = None) -> Histogram:
    """Add the packed histogram ``blob`` to ``into`` (a new one when None); bad blobs add nothing."""
    hist: Histogram = {} if into is None else into
    if not blob:
        return hist
    try:
        flat = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return hist
    if not isinstance(flat, list):
        return hist
    for i in range(0, len(flat) - 1, 2):
        b, n = flat[i], flat[i + 1]
        if type(b) is int and type(n) is int and 0 <= b <= TOP and n > 0:
            hist[b] = hist.get(b, 0) + n
    return hist


def merge(a: bytes | None, b: bytes | None) -> bytes | None:
    """SQL function ``merge_latency(a, b)``: the two packed histograms added."""
    if not a or not b:
        return a or b
    return pack(unpack(b, unpack(a)))


def merged(blobs: Iterable[bytes | None]) -> Histogram:
    hist: Histogram = {}
    for blob in blobs:
        unpack(blob, hist)
    return hist


def percentiles(hist: Histogram, quantiles: Iterable[float]) -> list[float | None]:
    """The latency (ms) at each quantile (0 < q <= 1): the smallest bucket holding at least q of the
    samples; None for each when the histogram is empty."""
    qs = list(quantiles)
    total = sum(hist.values())
    if total == 0:
        return [None] * len(qs)
    ordered = sorted(hist.items())
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for b, n in ordered:
            seen += n
            if seen >= rank:
                out.append(round(value(b), 3))
                break
    return out
