"""``fanout dlq list|replay``: browse the dead-letter topic and re-enqueue what matches."""

from __future__ import annotations

import sys

import click

from fanout.commands.context import TIME, CliState, UsageOrConfigError, pass_state, print_json, print_table
from fanout.control.deadletters import BadCursor, DeadLetterFilter, browse, decode_cursor
from fanout.control.replays import ReplayCounts, replay_dead_letters
from fanout.model.errors import FanoutError


@click.group()
def dlq() -> None:
    """Dead letters: list them, replay them."""


def _filter(
    subscription: str | None,
    since: int | None,
    until: int | None,
    ids: tuple[str, ...] = (),
    event_ids: tuple[str, ...] = (),
) -> DeadLetterFilter:
    parsed = set()
    for text in ids:
        partition, _, offset = text.partition("-")
        if not (partition.isdigit() and offset.isdigit()):
            raise UsageOrConfigError(f"--id {text!r} is not <partition>-<offset>")
        parsed.add((int(partition), int(offset)))
    return DeadLetterFilter(
        subscription=subscription,
        since_ms=since,
        until_ms=until,
        ids=frozenset(parsed) if parsed else None,
        event_ids=frozenset(event_ids) if event_ids else None,
    )


@dlq.command("list")
@click.option("--subscription", help="Only this subscription's dead letters.")
@click.option("--since", type=TIME, help="Dead-lettered at or after (ISO 8601, epoch seconds, or 2h ago).")
@click.option("--until", type=TIME, help="Dead-lettered before.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Dead letters per page."
)
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON (items, next_cursor).")
@pass_state
def list_(
    state: CliState,
    subscription: str | None,
    since: int | None,
    until: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List dead letters, oldest first, as a table (reason, attempts, last status) or JSON."""
    try:
        position = decode_cursor(cursor) if cursor else None
        page = browse(state.settings, _filter(subscription, since, until), limit, position, preview=200)
    except BadCursor as exc:
        raise UsageOrConfigError(str(exc)) from None
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    print_table(
        ["ID", "DEAD-LETTERED", "SUBSCRIPTION", "EVENT", "ATTEMPTS", "STATUS", "REASON"],
        [
            [
                d["id"],
                d["dead_lettered_at"],
                d["subscription"] or "-",
                d["event_id"] or "-",
                "-" if d["attempts"] is None else str(d["attempts"]),
                "-" if d["last_status"] is None else str(d["last_status"]),
                d["reason"][:60],
            ]
            for d in page.items
        ],
    )
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@dlq.command("replay")
@click.option("--subscription", help="Only this subscription's dead letters.")
@click.option("--since", type=TIME, help="Dead-lettered at or after.")
@click.option("--until", type=TIME, help="Dead-lettered before.")
@click.option("--id", "ids", multiple=True, help="A dead-letter id <partition>-<offset> (repeatable).")
@click.option("--event-id", "event_ids", multiple=True, help="An event id (webhook-id) (repeatable).")
@click.option("--limit", type=click.IntRange(1), help="Replay at most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_state
def replay_(
    state: CliState,
    subscription: str | None,
    since: int | None,
    until: int | None,
    ids: tuple[str, ...],
    event_ids: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """Re-enqueue matching dead letters to the first retry tier (attempts and max_age start again),
    with a progress bar on stderr."""
    where = _filter(subscription, since, until, ids, event_ids)
    with click.progressbar(length=1, label="replaying", file=sys.stderr) as bar:

        def progress(counts: ReplayCounts) -> None:
            bar.length = max(counts.total, 1)
            bar.update(counts.scanned - bar.pos)

        try:
            counts = replay_dead_letters(state.settings, where, limit, progress)
        except FanoutError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({"replayed": counts.replayed, "skipped": counts.skipped})
    else:
        click.echo(f"replayed {counts.replayed}, skipped {counts.skipped} (poison records, values dropped)")
