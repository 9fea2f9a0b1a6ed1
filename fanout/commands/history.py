"""``fanout events show``, ``fanout attempts list`` and ``fanout subscriptions stats``: the delivery
history, from the index at ``history.path`` brought up to date with the attempts topic first
(``fanout.history.local``; the same answers as the API's ``GET /v1/events/{id}``, ``.../attempts`` and
``.../stats``, whose JSON ``--json`` prints)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from fanout.commands.context import TIME, CliState, UsageOrConfigError, pass_state, print_json, print_table
from fanout.history import views
from fanout.history.local import LocalHistory, up_to_date
from fanout.history.queries import AttemptQuery, InvalidCursor
from fanout.history.record import Outcome
from fanout.model.errors import FanoutError

T = TypeVar("T")
OUTCOME_CHOICES = [*(str(o) for o in Outcome), "failed"]


def _timeout_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        type=click.FloatRange(1),
        default=120,
        show_default=True,
        help="Seconds to bring the index (history.path) up to date with the attempts topic.",
    )(f)


def _local(state: CliState, timeout: float) -> LocalHistory:
    try:
        local = up_to_date(state.settings, timeout)
    except FanoutError as exc:
        raise click.ClickException(str(exc)) from None
    if local.shared is not None:
        click.echo(f"history.path is kept by another process ({local.shared}); reading it as it is", err=True)
    return local


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _attempt_row(a: dict[str, Any]) -> list[str]:
    response, error, request = a["response"], a["error"], a["request"]
    return [
        _when(a["time_ms"]),
        str(a["attempt"]),
        a["outcome"],
        "-" if response is None else str(response["status"]),
        "-" if request is None else f"{request['latency_ms']:.1f}",
        (error["message"] if error else a["reason"] or "")[:60],
    ]


@click.group()
def events() -> None:
    """Events' delivery history."""


@events.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /v1/events/{id} answers.")
@_timeout_option
@pass_state
def show(state: CliState, event_id: str, as_json: bool, timeout: float) -> None:
    """An event's deliveries: per subscription its state and every attempt, in order."""
    local = _local(state, timeout)
    found = local.store.event(event_id)
    if found is None:
        raise click.ClickException(f"no attempt record of event {event_id!r} within history.retention")
    doc = views.event_json(found, state.settings.history.payload_bytes)
    if as_json:
        print_json(doc)
        return
    origin = doc["origin"]
    where = "-" if origin is None else f"{origin['topic']}[{origin['partition']}]@{origin['offset']}"
    click.echo(
        f"event {doc['event_id']}  type {doc['event_type'] or '-'}  time {_when(doc['event_time_ms'])}"
    )
    click.echo(f"source {where}")
    if doc["payload"] is not None:
        cut = " (truncated)" if doc["payload"]["truncated"] else ""
        click.echo(f"payload{cut}: {doc['payload']['text']}")
    for sub in doc["subscriptions"]:
        state_text = sub["state"]
        if sub["retry_at_ms"] is not None:
            state_text += f" until {_when(sub['retry_at_ms'])}"
        click.echo(f"\n{sub['subscription']}: {state_text} ({sub['attempted']} attempts)")
        print_table(
            ["TIME", "ATTEMPT", "OUTCOME", "STATUS", "MS", "ERROR"],
            [_attempt_row(a) for a in sub["attempts"]],
        )


@click.group()
def attempts() -> None:
    """Subscriptions' attempt records."""


@attempts.command("list")
@click.option("--subscription", "-s", required=True, help="The subscription.")
@click.option(
    "--outcome", type=click.Choice(OUTCOME_CHOICES), help="One outcome, or failed for every failure."
)
@click.option(
    "--status", type=click.IntRange(100, 599), help="Only attempts the endpoint answered with this status."
)
@click.option("--since", type=TIME, help="Decided at or after (ISO 8601, epoch seconds, or 1h ago).")
@click.option("--until", type=TIME, help="Decided before.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Records per page."
)
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print what GET /v1/subscriptions/{id}/attempts answers."
)
@_timeout_option
@pass_state
def list_(
    state: CliState,
    subscription: str,
    outcome: str | None,
    status: int | None,
    since: int | None,
    until: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    timeout: float,
) -> None:
    """A subscription's attempt records, newest first."""
    if since is not None and until is not None and until <= since:
        raise UsageOrConfigError("--until must be later than --since")
    query = AttemptQuery(
        outcome=None if outcome is None else "failed" if outcome == "failed" else Outcome(outcome),
        status=status,
        since_ms=since,
        until_ms=until,
        limit=limit,
        cursor=cursor,
    )
    local = _local(state, timeout)
    try:
        page = local.store.attempts(subscription, query)
    except InvalidCursor as exc:
        raise UsageOrConfigError(f"--cursor: {exc}") from None
    doc = views.page_json(page, state.settings.history.payload_bytes)
    if as_json:
        print_json(doc)
        return
    print_table(
        ["TIME", "EVENT", "ATTEMPT", "OUTCOME", "STATUS", "MS", "ERROR"],
        [[r[0], a["event_id"], *r[1:]] for a in doc["items"] for r in [_attempt_row(a)]],
    )
    if doc["next_cursor"]:
        click.echo(f"more: --cursor {doc['next_cursor']}", err=True)


@click.command("stats")
@click.argument("sub_id")
@click.option("--window", default="1h", show_default=True, help="5m, 1h, 24h, 7d (1m to 31d).")
@click.option("--json", "as_json", is_flag=True, help="Print what GET /v1/subscriptions/{id}/stats answers.")
@_timeout_option
@pass_state
def stats(state: CliState, sub_id: str, window: str, as_json: bool, timeout: float) -> None:
    """A subscription's deliveries over a window: counts by outcome, success rate, latency
    percentiles, the last success and failure, and the last run of consecutive failures."""
    try:
        seconds = views.window_seconds(window)
    except ValueError as exc:
        raise UsageOrConfigError(f"--window: {exc}") from None
    local = _local(state, timeout)
    doc = views.stats_json(local.store.stats(sub_id, seconds), window)
    if as_json:
        print_json(doc)
        return
    rate = doc["success_rate"]
    lat = doc["latency_ms"]
    streak = doc["failure_streak"]
    rows = [
        *([outcome, str(n)] for outcome, n in doc["counts"].items()),
        ["attempted", str(doc["attempted"])],
        ["success rate", "-" if rate is None else f"{rate:.1%}"],
        *([f"latency {q}", "-" if v is None else f"{v:.1f} ms"] for q, v in lat.items()),
        ["last success", _when(doc["last_success_ms"])],
        ["last failure", _when(doc["last_failure_ms"])],
        [
            "failure streak",
            "-"
            if streak is None
            else f"{streak['failures']}{'+' if streak['capped'] else ''} from {_when(streak['first_ms'])}"
            f" to {_when(streak['last_ms'])}{' (ongoing)' if streak['ongoing'] else ''}",
        ],
    ]
    click.echo(f"{sub_id}, last {window}")
    print_table(["", "VALUE"], rows)
