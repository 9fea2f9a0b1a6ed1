"""``--config`` on every command: after the group (``fanout run --config f.yaml``) as before it
(``fanout --config f.yaml run``); the one nearest the command wins, then FANOUT_CONFIG.

Each config file here is invalid in its own way, so the error a command exits with (2, naming the field
and the file) shows which file it read, without a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fanout.cli import main


@pytest.fixture
def bad_servers(tmp_path: Path) -> Path:
    path = tmp_path / "servers.yaml"
    path.write_text("kafka:\n  bootstrap_servers: nohost\n")
    return path


@pytest.fixture
def bad_partitions(tmp_path: Path) -> Path:
    path = tmp_path / "partitions.yaml"
    path.write_text("topics:\n  partitions: 0\n")
    return path


@pytest.fixture(autouse=True)
def no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_CONFIG", raising=False)


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def _read(result_output: str, bad: Path) -> bool:
    return str(bad) in result_output and "invalid setting" in result_output


def test_every_command_takes_config() -> None:
    missing = [
        " ".join(path)
        for path, command in _commands(main)
        if not any("--config" in getattr(p, "opts", ()) for p in command.params)
    ]
    assert not missing, f"commands without --config: {missing}"


@pytest.mark.parametrize(
    "args",
    [
        ["topics", "describe"],
        ["subscriptions", "list"],
        ["dlq", "list"],
        ["publish", "t", "--data", "{}"],
        ["replay", "sub", "--since", "1h"],
        ["api"],
    ],
)
def test_a_commands_config_is_read(args: list[str], bad_servers: Path) -> None:
    result = CliRunner().invoke(main, [*args, "--config", str(bad_servers)])
    assert result.exit_code == 2, result.output
    assert _read(result.output, bad_servers) and "kafka.bootstrap_servers" in result.output


def test_the_commands_config_wins_over_the_groups(bad_servers: Path, bad_partitions: Path) -> None:
    args = ["--config", str(bad_servers), "topics", "describe", "--config", str(bad_partitions)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert _read(result.output, bad_partitions) and "topics.partitions" in result.output
    assert str(bad_servers) not in result.output


def test_a_subgroups_config_applies_to_its_commands(bad_partitions: Path) -> None:
    result = CliRunner().invoke(main, ["subscriptions", "--config", str(bad_partitions), "list"])
    assert result.exit_code == 2 and _read(result.output, bad_partitions)


def test_the_commands_config_wins_over_fanout_config(
    monkeypatch: pytest.MonkeyPatch, bad_servers: Path, bad_partitions: Path
) -> None:
    monkeypatch.setenv("FANOUT_CONFIG", str(bad_servers))
    result = CliRunner().invoke(main, ["dlq", "list", "--config", str(bad_partitions)])
    assert result.exit_code == 2 and _read(result.output, bad_partitions)


def test_fanout_config_still_works(monkeypatch: pytest.MonkeyPatch, bad_servers: Path) -> None:
    monkeypatch.setenv("FANOUT_CONFIG", str(bad_servers))
    result = CliRunner().invoke(main, ["dlq", "list"])
    assert result.exit_code == 2 and _read(result.output, bad_servers)


def test_a_missing_file_after_the_command_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["topics", "describe", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_run_config_after_the_command(bad_servers: Path) -> None:
    """The case of issue 14, as a process (``fanout run`` installs signal handlers)."""
    env = {k: v for k, v in os.environ.items() if k != "FANOUT_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "run", "--config", str(bad_servers)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert _read(done.stderr, bad_servers)
