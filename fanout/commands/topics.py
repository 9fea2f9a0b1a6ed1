"""``fanout topics create|describe``."""

from __future__ import annotations

import click

from fanout.commands.context import CliState, pass_state, print_json, print_table
from fanout.kafka.topics import TopicAdminFailed, create_for, describe_for


@click.group()
def topics() -> None:
    """Create and inspect fanout's Kafka topics."""


@topics.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def create(state: CliState, names: tuple[str, ...], as_json: bool) -> None:
    """Create the internal topics and the source topics NAMES, idempotently.

    The retry and dead-letter topics take records at least as large as the largest existing topic of
    NAMES takes (its max.message.bytes), so whatever a source topic accepts can be handed off."""
    settings = state.settings
    for name in names:
        if settings.topics.is_internal(name):
            raise click.BadParameter(f"{name!r} is in the internal namespace {settings.topics.prefix}.*")
    try:
        results = create_for(settings, names)
    except TopicAdminFailed as exc:
        raise click.ClickException(f"creating topics failed: {exc}") from None
    if as_json:
        print_json([r.__dict__ for r in results])
        return
    print_table(
        ["TOPIC", "ROLE", "PARTITIONS", "RESULT"],
        [[r.name, r.role, str(r.partitions), "created" if r.created else "exists"] for r in results],
    )


@topics.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def describe(state: CliState, names: tuple[str, ...], as_json: bool) -> None:
    """Show the internal topics (and the source topics NAMES): partitions, replicas, configs; exit 1 if
    any is missing."""
    try:
        infos = describe_for(state.settings, names)
    except TopicAdminFailed as exc:
        raise click.ClickException(f"describing topics failed: {exc}") from None
    if as_json:
        print_json([i.__dict__ for i in infos])
    else:
        print_table(
            ["TOPIC", "ROLE", "PARTITIONS", "REPLICAS", "CONFIG"],
            [
                [
                    i.name,
                    i.role,
                    str(i.partitions) if i.exists else "-",
                    str(i.replication_factor) if i.exists else "-",
                    " ".join(f"{k}={v}" for k, v in sorted(i.config.items())) if i.exists else "MISSING",
                ]
                for i in infos
            ],
        )
    if not all(i.exists for i in infos):
        raise SystemExit(1)
