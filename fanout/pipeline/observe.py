"""What the pipeline tells telemetry (implemented in ``fanout.telemetry``). Both hooks are optional:
``Dispatcher.tracer`` and ``Settler.tracer`` stay None when tracing is off, so no span code runs.
"""

from __future__ import annotations

from typing import Protocol

from fanout.model.event import Event, Headers


class TracedSpan(Protocol):
    """A started span: a record's process span, or a retry or dead-letter write."""

    def decoded(self, event: Event, matched: int) -> None: ...
    def failed(self, reason: str) -> None: ...
    def end(self) -> None: ...


class PipelineTracer(Protocol):
    def record(self, record: object, retry: bool) -> TracedSpan:
        """Start the process span of a consumed record (the caller ends it)."""
        ...

    def hand_off(self, topic: str, parent: object, headers: Headers) -> tuple[TracedSpan, Headers]:
        """Start the span of a retry or dead-letter write (``parent``: a delivery's ``trace``); return it
        and the headers to write (with the span's context added)."""
        ...
