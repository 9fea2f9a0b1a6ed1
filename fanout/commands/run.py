"""``fanout run``: one member of the dispatcher consumer group, or ``--workers N`` of them."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from fanout.commands.context import CliState, UsageOrConfigError, pass_state
from fanout.model.errors import FanoutError, ValidationFailed


@click.command()
@click.option(
    "--routes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Apply this routes file to the subscriptions topic before running.",
)
@click.option("--group-id", help="Consumer group (default: dispatcher.group_id).")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Supervised worker processes (dispatcher.workers)."
)
@click.option("--worker-index", type=int, hidden=True)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Overrides telemetry.log_level (default INFO).",
)
@pass_state
def run(
    state: CliState,
    routes: Path | None,
    group_id: str | None,
    workers: int | None,
    worker_index: int | None,
    log_level: str | None,
) -> None:
    """Consume events and deliver them to every matching subscription until SIGTERM.

    One member of the consumer group dispatcher.group_id, or with --workers N, N supervised member
    processes (one that dies is restarted). With --routes, the file is applied first. SIGTERM stops
    fetching, finishes the deliveries in hand within dispatcher.drain_timeout, commits and exits 0.
    /healthz, /readyz and /metrics are served on dispatcher.http_port (8081; worker i on 8081 + i)."""
    signal.signal(signal.SIGTERM, _stop_while_starting)
    from fanout.control.routes import load_routes
    from fanout.control.subscriptions import SubscriptionStore
    from fanout.runtime.app import run_dispatcher
    from fanout.runtime.supervisor import Supervisor
    from fanout.telemetry.logs import setup_logging

    settings = state.settings
    log_level = log_level or settings.telemetry.log_level
    worker = {"worker": worker_index} if worker_index is not None else {}
    setup_logging(settings.telemetry.log_format, log_level, **worker)
    if group_id:
        settings = settings.model_copy(
            update={"dispatcher": settings.dispatcher.model_copy(update={"group_id": group_id})}
        )
    if routes is not None and worker_index is None:
        try:
            subs = load_routes(routes, settings.delivery)
        except ValidationFailed as exc:
            raise UsageOrConfigError(f"invalid routes file: {exc}") from None
        try:
            changes = SubscriptionStore(settings).apply(subs)
        except FanoutError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"applied {routes}: {len(changes)} change(s)", err=True)
    count = workers or settings.dispatcher.workers
    if count > 1 and worker_index is None:
        args = [*_config_args(state), "run", "--log-level", log_level]
        if group_id:
            args += ["--group-id", group_id]
        stop_timeout = settings.dispatcher.drain_timeout + 15
        sys.exit(Supervisor(count, args, stop_timeout).run())
    try:
        code = run_dispatcher(settings, worker=worker_index)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the dispatcher's own handler is installed (while importing, applying routes or
    starting): nothing was consumed yet, so stop at once with exit 0. The dispatcher and the supervisor
    replace this handler with their graceful ones."""
    raise SystemExit(0)


def _config_args(state: CliState) -> list[str]:
    return ["--config", str(state.config_file)] if state.config_file is not None else []
