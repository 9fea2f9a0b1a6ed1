"""The boundaries the layers meet through.

``RecordSink.produce`` (implemented in ``fanout.kafka``): the one boundary the pipeline writes through.
Contract: ``produce`` never blocks. It returns a future that resolves (on the event loop) once the
broker acknowledged the record with acks=all, or fails with the producer's error. Callers count a
hand-off as settled only when the future succeeded. The result says where the record was written;
the pipeline ignores it (the publish API reports it).

``BatchTarget.submit`` (implemented by the pipeline's ``Dispatcher``): where a consumer hands the records
it fetched, with backpressure as the answer (see its docstring).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from fanout.model.event import Headers


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int


class RecordSink(Protocol):
    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]: ...


R_contra = TypeVar("R_contra", contravariant=True)


class BatchTarget(Protocol[R_contra]):
    """Takes the batches a consumer fetched, or answers "not now".

    - ``submit(batch)`` runs on the event loop thread, and never blocks or awaits. True: the target took
      the whole batch; every record is now its to settle. False: the target is at capacity and took
      nothing; the caller keeps the batch and submits the same records again, before any record fetched
      after them, once ``ready`` is set (records of partitions revoked meanwhile are dropped, not
      submitted). A batch submitted while ``ready`` is set is taken whole, even when taking it brings the
      target to capacity.
    - ``ready`` is set while the target takes batches and cleared while it is at capacity; only the
      target sets or clears it, on the loop. Any thread may read it (``is_set()``: a flag read, cheap
      enough for every poll cycle) or wait on it: the consumer thread fetches nothing while it is clear.
    """

    @property
    def ready(self) -> threading.Event: ...

    def submit(self, batch: Sequence[R_contra]) -> bool: ...
