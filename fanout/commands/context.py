"""What every command shares: the settings (loaded once, lazily) and output helpers."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson

from fanout.config import Settings, load_settings
from fanout.errors import ConfigError


class UsageOrConfigError(click.ClickException):
    """Exit code 2: the command line or the configuration is wrong."""

    exit_code = 2


@dataclass
class CliState:
    config_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_file)
            except ConfigError as err:
                raise UsageOrConfigError(str(err)) from None
        return self._settings


pass_state = click.make_pass_decorator(CliState, ensure=True)


def print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
