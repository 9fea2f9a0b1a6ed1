"""What every command shares: the settings (loaded once, lazily) and output helpers."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from fanout.config import Settings, load_settings
from fanout.model.errors import ConfigError


class UsageOrConfigError(click.ClickException):
    """Exit code 2: the command line or the configuration is wrong."""

    exit_code = 2


@dataclass
class CliState:
    """The command line's shared state. ``config_file`` is the last ``--config`` given on the way down
    the command path (``fanout --config a.yaml run --config b.yaml`` reads b.yaml), else FANOUT_CONFIG."""

    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def use_config(self, config_file: Path) -> None:
        """Read ``config_file`` instead of what a command above this one named."""
        self.config_file = config_file
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except ConfigError as err:
                raise UsageOrConfigError(str(err)) from None
        return self._settings


pass_state = click.make_pass_decorator(CliState, ensure=True)

CONFIG_HELP = "YAML settings file (environment variables FANOUT_* take precedence)."


def _use_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).use_config(value)


def config_option() -> click.Option:
    """``--config FILE`` for a subcommand: it overrides the group's ``--config`` and FANOUT_CONFIG (a
    command's options are parsed after those of the groups above it)."""
    return click.Option(
        ["--config", "config_file"],
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_use_config,
        help=CONFIG_HELP,
    )


def add_config_option(command: click.Command) -> None:
    """Give ``command`` and every command below it ``--config`` (unless it has one already)."""
    if not any(param.name == "config_file" for param in command.params):
        command.params.append(config_option())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_config_option(sub)


def print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


if TYPE_CHECKING:
    _ParamType = click.ParamType[int, Any]
else:  # click < 8.5 has no type parameters at run time
    _ParamType = click.ParamType


class TimeParam(_ParamType):
    """A point in time, as epoch milliseconds: ISO 8601 (``2026-11-28T10:00:00Z``; no zone means UTC),
    epoch seconds (``1764324000``), or a duration ago (``90s``, ``15m``, ``2h``, ``7d``)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text[:-1].replace(".", "", 1).isdigit() and text[-1:] in _UNITS:
            return int((time.time() - float(text[:-1]) * _UNITS[text[-1]]) * 1000)
        if text.replace(".", "", 1).isdigit():
            return int(float(text) * 1000)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a time: use ISO 8601, epoch seconds, or 15m/2h/7d ago", param, ctx)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)


TIME = TimeParam()
