"""``fanout replay SUBSCRIPTION --since T [--until T]``: re-deliver a time range of the source topics."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from fanout.commands.context import TIME, CliState, UsageOrConfigError, pass_state, print_json
from fanout.control.jobs import Job, new_job_id, run_source_replay
from fanout.control.subscriptions import read_to_end
from fanout.kafka.producer import BlockingProducer
from fanout.model.errors import FanoutError
from fanout.pipeline.ops import ops_event


@click.command()
@click.argument("subscription")
@click.option("--since", type=TIME, required=True, help="From (ISO 8601, epoch seconds, or 2h ago).")
@click.option("--until", type=TIME, help="Up to, not including (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the finished job as JSON.")
@pass_state
def replay(state: CliState, subscription: str, since: int, until: int | None, as_json: bool) -> None:
    """Route every source record with since <= timestamp < until and write the matches for SUBSCRIPTION
    to the first retry tier, with a progress bar on stderr (a job: its progress also goes to the ops
    topic)."""
    settings = state.settings
    until = until if until is not None else int(time.time() * 1000)
    if until <= since:
        raise UsageOrConfigError("--until must be later than --since")
    try:
        sub = read_to_end(settings).get(subscription)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    if sub is None:
        raise click.ClickException(f"no subscription {subscription!r}")
    job = Job(new_job_id(), sub.id, since, until, int(time.time() * 1000))
    ops = BlockingProducer(settings)

    def emit(event_type: str, key: str, data: dict[str, Any]) -> None:
        ops.send(settings.topics.ops, ops_event(event_type, data), key.encode())

    click.echo(f"job {job.id}", err=True)
    try:
        with click.progressbar(length=1, label="replaying", file=sys.stderr) as bar:

            def progress(j: Job) -> None:
                bar.length = max(j.total, 1)
                bar.update(j.scanned - bar.pos)

            run_source_replay(settings, job, sub, emit, progress)
    finally:
        ops.close()
    if as_json:
        print_json(job.view())
    else:
        click.echo(f"{job.status}: {job.matched} of {job.scanned} records matched, {job.written} written")
    if job.status != "succeeded":
        raise click.ClickException(job.error or "the replay failed")
