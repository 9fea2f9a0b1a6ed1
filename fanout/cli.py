"""The ``fanout`` command: a click group; each command group lives in ``fanout.commands``.

``--config FILE`` is taken by the group and by every command below it (``fanout --config f.yaml run``
and ``fanout run --config f.yaml`` are the same); the one nearest the command wins, then FANOUT_CONFIG.
"""

from __future__ import annotations

from pathlib import Path

import click

from fanout import __version__
from fanout.commands.api import api
from fanout.commands.context import CONFIG_HELP, CliState, add_config_option
from fanout.commands.dlq import dlq
from fanout.commands.history import attempts, events, stats
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
    help=CONFIG_HELP,
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """fanout: Kafka-backed webhook fan-out."""
    ctx.obj = CliState(config_file=config_file)


subscriptions.add_command(stats)
for command in (topics, subscriptions, run, listen, api, keys, publish, dlq, replay, events, attempts):
    add_config_option(command)
    main.add_command(command)
