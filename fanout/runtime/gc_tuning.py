"""gc_tuning: the cyclic garbage collector's settings for the dispatcher's hot path.

Reference counting frees almost everything a delivery allocates; the cyclic collector only has to find
the few cycles (tasks and futures with their callbacks). With CPython's default gen-0 threshold of 700
allocations it ran hundreds of times a second, promoted in-flight deliveries to the old generations and
then traversed the whole heap, routing table included: with 10,000 subscriptions a full collection
took about 100 ms and they added up to a fifth of the run time. A larger young generation lets nearly
every delivery die young, and freezing the heap as it stands after start-up (the routing table, the
imported modules) keeps it out of every later collection.

The young generation is counted in net allocations, so what triggers a collection is the backlog of
queued deliveries growing, not the deliveries that come and go. With thousands of busy lanes the
backlog (``dispatcher.max_queued`` deliveries spread over many lanes, a dozen objects each) rises and
falls by more than 10,000 objects many times a second: at 10,000 a young collection ran about once
per 1,000 deliveries and promoted the queued ones, and the middle generation's collections then took
20-30 ms each (5 µs per delivery in all). At 50,000 they are rare (one young collection per 25,000
deliveries, about 10 ms).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect the youngest generation every ``YOUNG_THRESHOLD`` allocations (CPython's default: 700)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def settle_heap() -> None:
    """Collect once, then move every surviving object to the permanent generation (``gc.freeze``):
    long-lived start-up state is not traversed again. Objects frozen here are still freed by reference
    counting when they go (an old routing table, for example)."""
    gc.collect()
    gc.freeze()
