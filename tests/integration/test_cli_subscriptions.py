"""``fanout subscriptions apply|list|get|delete`` against the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from fanout.cli import main
from tests.integration.engine import create_engine_topics, engine_settings, settings_env

ROUTES = """\
subscriptions:
  - id: crm
    url: https://crm.example.com/hooks
    topics: [users]
    events: ["user.*"]
    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
    headers: {Authorization: Bearer not-for-your-eyes}
  - id: billing
    url: https://billing.example.com/hooks
    topics: [orders]
    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
"""


def test_apply_list_get_delete(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = engine_settings(bootstrap, unique)
    create_engine_topics(settings, [])
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    cli = CliRunner()

    applied = cli.invoke(main, ["subscriptions", "apply", "-f", str(routes)])
    assert applied.exit_code == 0, applied.output
    assert "applied crm (version 1)" in applied.output and "applied billing (version 1)" in applied.output
    again = cli.invoke(main, ["subscriptions", "apply", "-f", str(routes)])
    assert again.exit_code == 0 and "0 change(s), 2 unchanged" in again.output

    listed = cli.invoke(main, ["subscriptions", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    subs = {s["id"]: s for s in orjson.loads(listed.output)}
    assert set(subs) == {"crm", "billing"}
    assert "whsec_" not in listed.output and "not-for-your-eyes" not in listed.output
    assert subs["crm"]["events"] == ["user.*"]

    got = cli.invoke(main, ["subscriptions", "get", "crm"])
    assert got.exit_code == 0 and orjson.loads(got.output)["url"] == "https://crm.example.com/hooks"
    assert cli.invoke(main, ["subscriptions", "get", "nope"]).exit_code == 1

    stale = cli.invoke(main, ["subscriptions", "delete", "crm", "--if-version", "7"])
    assert stale.exit_code == 1 and "version conflict" in stale.output
    assert cli.invoke(main, ["subscriptions", "delete", "crm", "--if-version", "1"]).exit_code == 0
    table = cli.invoke(main, ["subscriptions", "list"])
    assert "billing" in table.output and "crm" not in table.output

    routes.write_text(ROUTES.split("  - id: billing")[0])
    pruned = cli.invoke(main, ["subscriptions", "apply", "-f", str(routes), "--prune"])
    assert pruned.exit_code == 0 and "deleted billing" in pruned.output and "applied crm" in pruned.output
    assert [s["id"] for s in orjson.loads(cli.invoke(main, ["subscriptions", "list", "--json"]).output)] == [
        "crm"
    ]

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "subscriptions:\n  - id: x\n    url: ftp://x\n    topics: [a]\n    secrets: [whsec_AAAA]\n"
    )
    refused = cli.invoke(main, ["subscriptions", "apply", "-f", str(bad)])
    assert refused.exit_code == 2 and "x.url" in refused.output
