"""The ``fanout`` command: a click group; each command group lives in ``fanout.commands``."""

from __future__ import annotations

from pathlib import Path

import click

from fanout import __version__
from fanout.commands.api import api
from fanout.commands.context import CliState
from fanout.commands.dlq import dlq
from fanout.commands.keys import keys
from fanout.commands.listen import listen
from fanout.commands.publish import publish
from fanout.commands.replay import replay
from fanout.commands.run import run
from fanout.commands.subscriptions import subscriptions
from fanout.commands.topics import topics


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fanout")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FANOUT_CONFIG",
    help="YAML settings file (environment variables FANOUT_* take precedence).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """fanout: Kafka-backed webhook fan-out."""
    ctx.obj = CliState(config_file=config_file)


main.add_command(topics)
main.add_command(subscriptions)
main.add_command(run)
main.add_command(listen)
main.add_command(api)
main.add_command(keys)
main.add_command(publish)
main.add_command(dlq)
main.add_command(replay)
