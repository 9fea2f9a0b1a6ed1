"""Response classes (DESIGN.md): 2xx success; 3xx retry (redirects are never followed); 410 disables;
408/425/429/5xx retry, honouring ``Retry-After``; other 4xx are permanent unless the subscription lists
the status as retryable."""

from __future__ import annotations

import time
from collections.abc import Collection
from email.utils import parsedate_to_datetime

from fanout.model.errors import DeliveryError, EndpointGone, PermanentDelivery, RetryableDelivery

RETRYABLE_4XX = frozenset({408, 425, 429})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as delta-seconds or an HTTP date → seconds from now (≥ 0), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(
    status: int, retry_after: str | None, retryable_statuses: Collection[int] = ()
) -> DeliveryError | None:
    """None for success, else the error that decides what happens to the delivery."""
    if 200 <= status < 300:
        return None
    text = f"HTTP {status}"
    if status == 410:
        return EndpointGone(text, status)
    if 300 <= status < 400:
        return RetryableDelivery(f"{text} (redirects are not followed)", status)
    if status in RETRYABLE_4XX or status >= 500 or status in retryable_statuses:
        return RetryableDelivery(text, status, retry_after_seconds(retry_after))
    if 400 <= status < 500:
        return PermanentDelivery(text, status)
    return RetryableDelivery(f"{text} (unexpected status)", status)
