"""``fanout subscriptions list|get|apply|delete|enable|disable|rotate-secret|reencrypt``: read and write
the subscriptions topic (compare-and-set, like the API's If-Match)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from fanout.commands.context import CliState, UsageOrConfigError, pass_state, print_json, print_table
from fanout.control.plans import disabled, enabled, rotated, rotated_ed25519
from fanout.control.routes import load_routes
from fanout.control.subscriptions import SubscriptionStore
from fanout.http.signing import new_ed25519_key, new_secret
from fanout.model.errors import FanoutError, ValidationFailed, VersionConflict
from fanout.model.subscription import Subscription


@click.group()
def subscriptions() -> None:
    """Manage subscriptions (the compacted subscriptions topic)."""


def _store(state: CliState) -> SubscriptionStore:
    return SubscriptionStore(state.settings)


@subscriptions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (secrets are never shown).")
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List every subscription."""
    try:
        subs = sorted(_store(state).read().values(), key=lambda s: s.id)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json([s.public() for s in subs])
        return
    print_table(
        ["ID", "VERSION", "ENABLED", "TOPICS", "EVENTS", "URL"],
        [
            [
                s.id,
                str(s.version),
                "yes" if s.enabled else "no",
                ",".join(s.topics),
                ",".join(s.events),
                s.url,
            ]
            for s in subs
        ],
    )


@subscriptions.command()
@click.argument("sub_id")
@pass_state
def get(state: CliState, sub_id: str) -> None:
    """Show one subscription as JSON (without its secrets)."""
    sub = _store(state).read().get(sub_id)
    if sub is None:
        raise click.ClickException(f"no subscription {sub_id!r}")
    print_json(sub.public())


@subscriptions.command()
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The routes file (YAML).",
)
@click.option("--prune", is_flag=True, help="Delete subscriptions that are not in the file.")
@pass_state
def apply(state: CliState, path: Path, prune: bool) -> None:
    """Upsert the subscriptions of a routes file (atomically)."""
    try:
        subs = load_routes(path, state.settings.delivery)
    except ValidationFailed as exc:
        raise UsageOrConfigError(f"invalid routes file: {exc}") from None
    try:
        changes = _store(state).apply(subs, prune=prune)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    for change in changes:
        if change.sub is None:
            click.echo(f"deleted {change.key}")
        else:
            click.echo(f"applied {change.key} (version {change.sub.version})")
    unchanged = len(subs) - sum(1 for c in changes if c.sub is not None)
    click.echo(f"{len(changes)} change(s), {unchanged} unchanged")


@subscriptions.command()
@click.argument("sub_id")
@click.option("--if-version", type=int, default=None, help="Only delete if the current version is this one.")
@pass_state
def delete(state: CliState, sub_id: str, if_version: int | None) -> None:
    """Delete a subscription (a tombstone in the topic)."""
    try:
        deleted = _store(state).delete(sub_id, if_version)
    except VersionConflict as exc:
        raise click.ClickException(f"version conflict: {exc}") from None
    if not deleted:
        raise click.ClickException(f"no subscription {sub_id!r}")
    click.echo(f"deleted {sub_id}")


def _update(
    state: CliState, sub_id: str, change: Callable[[Subscription], Subscription], version: int | None
) -> Subscription:
    try:
        return _store(state).update(sub_id, change, version)
    except KeyError:
        raise click.ClickException(f"no subscription {sub_id!r}") from None
    except VersionConflict as exc:
        raise click.ClickException(f"version conflict: {exc}") from None
    except ValidationFailed as exc:
        raise click.ClickException(str(exc)) from None
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None


IF_VERSION = click.option(
    "--if-version", type=int, default=None, help="Only change it if the current version is this one."
)


JSON = click.option("--json", "as_json", is_flag=True, help="Print the subscription as JSON (no secrets).")


@subscriptions.command()
@click.argument("sub_id")
@IF_VERSION
@JSON
@pass_state
def enable(state: CliState, sub_id: str, if_version: int | None, as_json: bool) -> None:
    """Enable a subscription (events flow again; replay its dead letters to catch up)."""
    sub = _update(state, sub_id, enabled, if_version)
    if as_json:
        print_json(sub.public())
    else:
        click.echo(f"enabled {sub_id} (version {sub.version})")


@subscriptions.command()
@click.argument("sub_id")
@click.option(
    "--reason", default="disabled by an operator", show_default=True, help="Kept with the subscription."
)
@IF_VERSION
@JSON
@pass_state
def disable(state: CliState, sub_id: str, reason: str, if_version: int | None, as_json: bool) -> None:
    """Disable a subscription: its events are dead-lettered (reason "subscription disabled")."""
    sub = _update(state, sub_id, lambda s: disabled(s, reason), if_version)
    if as_json:
        print_json(sub.public())
    else:
        click.echo(f"disabled {sub_id} (version {sub.version})")


@subscriptions.command("rotate-secret")
@click.argument("sub_id")
@click.option(
    "--grace",
    type=click.FloatRange(0),
    help="Seconds the old secrets (or keys) stay valid (default: api.secret_grace).",
)
@click.option(
    "--ed25519",
    is_flag=True,
    help="Rotate the Ed25519 key (v1a; a subscription without one gets its first) instead of the HMAC "
    "secret; its public key is printed, the private key never.",
)
@IF_VERSION
@click.option("--json", "as_json", is_flag=True, help="Print the new secret (or public key) as JSON.")
@pass_state
def rotate_secret(
    state: CliState, sub_id: str, grace: float | None, ed25519: bool, if_version: int | None, as_json: bool
) -> None:
    """A new signing secret, printed once (or with --ed25519 a new Ed25519 key, whose public key is
    printed); the old and the new are both signed with until the grace period ends."""
    seconds = state.settings.api.secret_grace if grace is None else grace
    if ed25519:
        private, public = new_ed25519_key()
        sub = _update(state, sub_id, lambda s: rotated_ed25519(s, private, seconds), if_version)
        expiry = [p.expires_at.isoformat() for p in sub.previous_ed25519_keys]
        shown = {"ed25519_public_key": public, "previous_ed25519_keys_expire_at": expiry}
        what = f"new Ed25519 public key for {sub_id} (version {sub.version}): {public}"
    else:
        secret = new_secret()
        sub = _update(state, sub_id, lambda s: rotated(s, secret, seconds), if_version)
        expiry = [p.expires_at.isoformat() for p in sub.previous_secrets]
        shown = {"secret": secret, "previous_secrets_expire_at": expiry}
        what = f"new secret for {sub_id} (version {sub.version}; shown once): {secret}"
    if as_json:
        print_json({"id": sub.id, "version": sub.version, **shown})
        return
    click.echo(what)
    if expiry:
        click.echo(f"the previous {'key' if ed25519 else 'secret'}(s) stay valid until {min(expiry)}")


@subscriptions.command()
@pass_state
def reencrypt(state: CliState) -> None:
    """Write every subscription again, sealing its secrets with the first key of secrets.keys (after
    adding a new key in front; then the old key can be removed)."""
    try:
        changes = _store(state).rewrite_all()
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rewrote {len(changes)} subscription(s)")
