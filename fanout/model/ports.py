"""The one boundary the pipeline writes through: ``RecordSink.produce`` (implemented in ``fanout.kafka``).

Contract: ``produce`` never blocks. It returns a future that resolves (on the event loop) once the
broker acknowledged the record with acks=all, or fails with the producer's error. Callers count a
hand-off as settled only when the future succeeded. The result says where the record was written;
the pipeline ignores it (the publish API reports it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

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
