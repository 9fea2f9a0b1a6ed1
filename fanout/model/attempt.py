"""What one delivery attempt came to, and how a delivery left settle: the values the delivery history
is made of (``fanout.history`` turns them into attempt records).

- ``AttemptResult``: what the HTTP sender saw of one attempt (``fanout.http.sender``): the
  ``webhook-timestamp`` it signed, the time to the answer or the error, the status, the response's raw
  headers and the first bytes of its body, the transport's error class. The sender puts it on the
  delivery (``Delivery.result``) for every request that went out; an attempt that never reached the
  wire (a refused target, no connection slot) leaves None there. It holds references only: nothing is
  decoded or copied until a history record is built from it.
- ``Outcome``: how a delivery left settle (one attempt record each; see ``fanout.history.record``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY_SCHEDULED = "retry_scheduled"
    SPILLED = "spilled"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"
    DISABLED = "disabled"

    @property
    def failed(self) -> bool:
        """Everything but delivered and spilled (a spill is fanout's pace, not the endpoint's fault)."""
        return self not in (Outcome.DELIVERED, Outcome.SPILLED)


@dataclass(slots=True)
class AttemptResult:
    """One HTTP attempt as the sender saw it. ``webhook_timestamp``: the signed ``webhook-timestamp``
    (Unix seconds); ``latency``: seconds from sending to the answer or the error. ``status`` and
    ``headers`` (raw pairs as received) are None / empty when no answer came; ``body`` is the
    transport's prefix of the response body and ``body_size`` the whole body's length when known.
    ``error_class``: the transport error's class name (``ReadTimeout``, ``ConnectError``...) when no
    answer came."""

    webhook_timestamp: int
    latency: float
    status: int | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    body_size: int | None = None
    error_class: str | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of the response header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_type(self) -> str | None:
        value = self.header(b"content-type")
        return None if value is None else value.decode("latin-1")
