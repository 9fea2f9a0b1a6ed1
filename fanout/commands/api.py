"""``fanout api``: serve the HTTP API (publish, ingest, subscriptions, dead letters, replays, the delivery
history) and keep the delivery-history index at ``history.path``."""

from __future__ import annotations

import sys

import click

from fanout.commands.context import CliState, pass_state
from fanout.model.errors import FanoutError


@click.command("api")
@click.option("--host", help="Address to listen on (default: api.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: api.port).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Overrides telemetry.log_level (default INFO).",
)
@pass_state
def api(state: CliState, host: str | None, port: int | None, log_level: str | None) -> None:
    """Serve the HTTP API until SIGTERM (then finish the requests in flight and exit 0), indexing the
    attempts topic into history.path for the delivery-history routes."""
    from fanout.api.app import run_api
    from fanout.telemetry.logs import setup_logging

    settings = state.settings
    setup_logging(settings.telemetry.log_format, log_level or settings.telemetry.log_level)
    changes = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if changes:
        settings = settings.model_copy(update={"api": settings.api.model_copy(update=changes)})
    try:
        code = run_api(settings)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
