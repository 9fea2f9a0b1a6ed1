"""``fanout run``: one member of the dispatcher consumer group."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from fanout.commands.context import CliState, UsageOrConfigError, pass_state
from fanout.errors import FanoutError, ValidationFailed


@click.command()
@click.option(
    "--routes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Apply this routes file to the subscriptions topic before running.",
)
@click.option("--group-id", help="Consumer group (default: dispatcher.group_id).")
@click.option(
    "--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
)
@pass_state
def run(state: CliState, routes: Path | None, group_id: str | None, log_level: str) -> None:
    """Consume events and deliver them to every matching subscription until SIGTERM."""
    from fanout.app import run_dispatcher
    from fanout.kafka.subscriptions import SubscriptionStore
    from fanout.routes import load_routes

    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = state.settings
    if group_id:
        settings = settings.model_copy(
            update={"dispatcher": settings.dispatcher.model_copy(update={"group_id": group_id})}
        )
    if routes is not None:
        try:
            subs = load_routes(routes, settings.delivery)
        except ValidationFailed as exc:
            raise UsageOrConfigError(f"invalid routes file: {exc}") from None
        try:
            changes = SubscriptionStore(settings).apply(subs)
        except FanoutError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"applied {routes}: {len(changes)} change(s)", err=True)
    try:
        code = run_dispatcher(settings)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
