"""``fanout events show``, ``fanout attempts list`` and ``fanout subscriptions stats`` against the real
broker: they bring the index at ``history.path`` up to date with the attempts topic (a second run reads
only what was added), print tables or, with ``--json``, what the API answers, and read the file as it
is when a ``fanout api`` keeps it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from fanout.api.openapi import validator
from fanout.cli import main
from fanout.config import HistorySettings, Settings
from fanout.history.record import Outcome
from tests.history_records import make
from tests.integration.api import running_api
from tests.integration.attempts import produce_records
from tests.integration.engine import create_engine_topics, engine_settings, settings_env
from tests.integration.test_api_history import caught_up, response_schema

pytestmark = pytest.mark.integration


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def hsettings(bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    s = engine_settings(bootstrap, unique)
    s = s.model_copy(update={"history": HistorySettings(path=tmp_path / "cli.sqlite", retention=3600)})
    for name, value in settings_env(s).items():
        monkeypatch.setenv(name, value)
    create_engine_topics(s, [])
    return s


async def test_the_history_commands_print_tables_and_the_apis_json(hsettings: Settings) -> None:
    now = int(time.time() * 1000)
    produce_records(
        hsettings,
        [
            make(Outcome.RETRY_SCHEDULED, "evt-1", "hook-1", now - 3000, 1, status=503),
            make(Outcome.DELIVERED, "evt-1", "hook-1", now - 2000, 2, latency_ms=30.0),
            make(Outcome.DEAD_LETTERED, "evt-2", "hook-1", now - 1000, 1, status=500),
        ],
    )
    code, out, err = invoke("events", "show", "evt-1")
    assert code == 0, err
    assert "hook-1: delivered (2 attempts)" in out and "retry_scheduled" in out and "503" in out

    code, out, err = invoke("events", "show", "evt-1", "--json")
    assert code == 0, err
    doc = orjson.loads(out)
    validator(response_schema("/v1/events/{id}")).validate(doc)
    assert [a["attempt"] for a in doc["subscriptions"][0]["attempts"]] == [1, 2]

    code, out, err = invoke("attempts", "list", "--subscription", "hook-1", "--outcome", "failed", "--json")
    assert code == 0, err
    page = orjson.loads(out)
    validator(response_schema("/v1/subscriptions/{id}/attempts")).validate(page)
    assert [(a["event_id"], a["outcome"]) for a in page["items"]] == [
        ("evt-2", "dead_lettered"),
        ("evt-1", "retry_scheduled"),
    ]
    code, out, err = invoke("attempts", "list", "-s", "hook-1", "--since", "1h")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["TIME", "EVENT", "ATTEMPT", "OUTCOME", "STATUS", "MS", "ERROR"]
    assert len(out.splitlines()) == 4

    code, out, err = invoke("subscriptions", "stats", "hook-1", "--json")
    assert code == 0, err
    stats = orjson.loads(out)
    validator(response_schema("/v1/subscriptions/{id}/stats")).validate(stats)
    assert stats["counts"]["delivered"] == 1 and stats["attempted"] == 3
    assert stats["failure_streak"]["failures"] == 1 and stats["failure_streak"]["ongoing"]
    code, out, err = invoke("subscriptions", "stats", "hook-1")
    assert code == 0 and "success rate" in out and "33.3%" in out

    produce_records(hsettings, [make(Outcome.DELIVERED, "evt-3", "hook-1", now, 1)])
    code, out, err = invoke("events", "show", "evt-3", "--json")
    assert code == 0, err
    code, out, err = invoke("attempts", "list", "-s", "hook-1", "--json", "--limit", "1000")
    assert len(orjson.loads(out)["items"]) == 4, "the second run indexed only the new record, once"

    assert invoke("events", "show", "evt-nope")[0] == 1
    assert invoke("subscriptions", "stats", "hook-1", "--window", "0h")[0] == 2
    assert invoke("attempts", "list", "-s", "hook-1", "--cursor", "bad!")[0] == 2
    assert invoke("attempts", "list", "-s", "hook-1", "--outcome", "exploded")[0] == 2


async def test_a_file_an_api_keeps_is_read_as_it_is(hsettings: Settings, unique: str) -> None:
    produce_records(hsettings, [make(Outcome.DELIVERED, "evt-api", "hook-9", int(time.time() * 1000), 1)])
    from tests.integration.api import api_settings

    settings = api_settings(hsettings.kafka.bootstrap_servers, unique)
    async with running_api(settings, history=hsettings.history.path) as api:
        await caught_up(api)
        code, out, err = await __import__("asyncio").to_thread(invoke, "events", "show", "evt-api", "--json")
        assert code == 0, err
        assert "kept by another process (fanout api pid" in err, (out, err)
        assert orjson.loads(out)["subscriptions"][0]["subscription"] == "hook-9"
