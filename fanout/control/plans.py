"""Compare-and-set plans for the subscriptions topic: pure functions from the current subscriptions to
the records to write (``SubscriptionStore.transact`` runs them inside its transaction, and starts over
when fenced). A plan raises ``VersionConflict`` when the caller's expected version is stale, and
``KeyError`` when the subscription it changes does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fanout.model.errors import VersionConflict
from fanout.model.subscription import Subscription, parse_subscription


@dataclass(frozen=True)
class Change:
    """One record to write: a new subscription document, or a tombstone (``sub`` None). ``offset`` is
    where it was written (-1 until it was)."""

    key: str
    sub: Subscription | None
    offset: int = -1


Plan = Callable[[dict[str, Subscription]], list[Change]]


def put_plan(sub: Subscription, expected_version: int | None = None, create: bool = False) -> Plan:
    """The compare-and-set plan of ``SubscriptionStore.put``."""

    def plan(current: dict[str, Subscription]) -> list[Change]:
        existing = current.get(sub.id)
        version = existing.version if existing else None
        if create and existing is not None:
            raise VersionConflict(sub.id, None, version)
        if expected_version is not None and expected_version != (version or 0):
            raise VersionConflict(sub.id, expected_version, version)
        return [Change(sub.id, sub.model_copy(update={"version": (version or 0) + 1}))]

    return plan


def update_plan(
    sub_id: str, change: Callable[[Subscription], Subscription], expected_version: int | None = None
) -> Plan:
    """The compare-and-set plan of ``SubscriptionStore.update``."""

    def plan(current: dict[str, Subscription]) -> list[Change]:
        existing = current.get(sub_id)
        if existing is None:
            raise KeyError(sub_id)
        if expected_version is not None and expected_version != existing.version:
            raise VersionConflict(sub_id, expected_version, existing.version)
        return [Change(sub_id, change(existing).model_copy(update={"version": existing.version + 1}))]

    return plan


def delete_plan(sub_id: str, expected_version: int | None = None) -> Plan:
    """The compare-and-set plan of ``SubscriptionStore.delete`` (no change if it does not exist)."""

    def plan(current: dict[str, Subscription]) -> list[Change]:
        existing = current.get(sub_id)
        if existing is None:
            return []
        if expected_version is not None and expected_version != existing.version:
            raise VersionConflict(sub_id, expected_version, existing.version)
        return [Change(sub_id, None)]

    return plan


def apply_plan(subs: Iterable[Subscription], prune: bool = False) -> Plan:
    """The plan of ``SubscriptionStore.apply``."""
    wanted = {s.id: s for s in subs}

    def plan(current: dict[str, Subscription]) -> list[Change]:
        changes = []
        for sub_id, sub in wanted.items():
            existing = current.get(sub_id)
            if existing is not None and existing.model_copy(update={"version": 0}) == sub.model_copy(
                update={"version": 0}
            ):
                continue
            changes.append(
                Change(sub_id, sub.model_copy(update={"version": (existing.version if existing else 0) + 1}))
            )
        if prune:
            changes.extend(Change(sub_id, None) for sub_id in current.keys() - wanted.keys())
        return changes

    return plan


def enabled(sub: Subscription) -> Subscription:
    return sub.model_copy(update={"enabled": True, "disabled_reason": None})


def disabled(sub: Subscription, reason: str) -> Subscription:
    return sub.model_copy(update={"enabled": False, "disabled_reason": reason})


def rotated(
    sub: Subscription, secret: str, grace_seconds: float, now: datetime | None = None
) -> Subscription:
    """``sub`` signing with ``secret`` from now on, and with its current secrets for ``grace_seconds``
    more (none when 0); previous secrets that have expired are dropped, and at most ten are kept."""
    now = now or datetime.now(UTC)
    kept = [p.model_dump(mode="json") for p in sub.previous_secrets if p.expires_at > now]
    until = (now + timedelta(seconds=grace_seconds)).isoformat()
    retired = [{"secret": s, "expires_at": until} for s in sub.secrets] if grace_seconds > 0 else []
    document = {**sub.document(), "secrets": [secret], "previous_secrets": (retired + kept)[:10]}
    return parse_subscription(document, default_id=sub.id)


def rotated_ed25519(
    sub: Subscription, key: str, grace_seconds: float, now: datetime | None = None
) -> Subscription:
    """``sub`` signing ``v1a`` with the ``whsk_`` ``key`` from now on, and with its current Ed25519 keys for
    ``grace_seconds`` more (as ``rotated`` does for HMAC secrets)."""
    now = now or datetime.now(UTC)
    kept = [p.model_dump(mode="json") for p in sub.previous_ed25519_keys if p.expires_at > now]
    until = (now + timedelta(seconds=grace_seconds)).isoformat()
    retired = [{"key": k, "expires_at": until} for k in sub.ed25519_keys] if grace_seconds > 0 else []
    document = {**sub.document(), "ed25519_keys": [key], "previous_ed25519_keys": (retired + kept)[:10]}
    return parse_subscription(document, default_id=sub.id)
