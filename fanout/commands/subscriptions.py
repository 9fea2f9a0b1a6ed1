"""``fanout subscriptions list|get|apply|delete``: read and write the subscriptions topic."""

from __future__ import annotations

from pathlib import Path

import click

from fanout.commands.context import CliState, UsageOrConfigError, pass_state, print_json, print_table
from fanout.errors import FanoutError, ValidationFailed, VersionConflict
from fanout.kafka.subscriptions import SubscriptionStore
from fanout.routes import load_routes


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
@click.option("-f", "--file", "path", required=True, type=click.Path(dir_okay=False, path_type=Path))
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
