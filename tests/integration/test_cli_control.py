"""The control-plane CLI against the real broker: publish, subscriptions enable/disable/rotate-secret,
dlq list/replay, replay; human output by default, --json for scripts, exit codes 0/1/2."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook

from fanout.cli import main
from fanout.control.subscriptions import read_to_end
from tests.integration.api import dispatcher_sees, record_count
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    read_topic,
    running,
    settings_env,
    subscription,
)
from tests.receivers import Receiver


async def test_cli_drives_fanout(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"{unique}.events"
    settings = engine_settings(bootstrap, unique)
    create_engine_topics(settings, [topic])
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    cli = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        """(exit code, output); with --json only stdout (a progress bar goes to stderr)."""
        result = cli.invoke(main, list(args))
        return result.exit_code, result.stdout if "--json" in args else result.output

    async def run(*args: str) -> tuple[int, str]:
        """In a thread: the dispatcher runs on this event loop meanwhile."""
        return await asyncio.to_thread(invoke, *args)

    payload = tmp_path / "data.json"
    payload.write_text('{"user_id": 1234}')
    code, out = await run("publish", "user.created", "--data", "@" + str(payload), "--topic", topic, "--json")
    assert code == 0, out
    published = orjson.loads(out)
    assert published["topic"] == topic and published["id"].startswith("evt_")
    code, out = await run(
        "publish", "user.created", "--data", '{"x": 1}', "--topic", topic, "--key", "k", "--id", "fixed"
    )
    assert code == 0 and "published fixed" in out
    assert (await run("publish", "user.created", "--data", "{nope", "--topic", topic))[0] == 2
    assert (await run("publish", "user.created", "--topic", settings.topics.dlq))[0] == 2
    assert (await run("publish", "user.created"))[0] == 2, "no topic and no api.default_topic"
    assert record_count(settings, topic) == 2
    (first, _) = sorted(
        read_topic(settings, topic, 2), key=lambda m: orjson.loads(m.value())["id"] != published["id"]
    )
    assert orjson.loads(first.value()) == {
        "event": "user.created",
        "id": published["id"],
        "data": {"user_id": 1234},
    }

    async with Receiver() as receiver:
        sub = subscription("crm", receiver.url, [topic])
        old_secret = sub.secrets[0]
        await apply(settings, [sub])
        code, out = await run("subscriptions", "disable", "crm", "--reason", "maintenance")
        assert code == 0 and "disabled crm (version 2)" in out
        assert (await run("subscriptions", "enable", "crm", "--if-version", "1"))[0] == 1, "stale version"
        assert (await run("subscriptions", "enable", "nope"))[0] == 1
        code, out = await run("subscriptions", "rotate-secret", "crm", "--grace", "600", "--json")
        assert code == 0, out
        rotated = orjson.loads(out)
        assert rotated["version"] == 3 and len(rotated["previous_secrets_expire_at"]) == 1
        stored = read_to_end(settings)["crm"]
        assert stored.enabled is False and stored.secrets == [rotated["secret"]]
        assert stored.previous_secrets[0].secret == old_secret
        code, out = await run("subscriptions", "rotate-secret", "crm", "--ed25519", "--json")
        assert code == 0 and "whsk_" not in out, out
        keyed = orjson.loads(out)
        assert keyed["version"] == 4 and keyed["previous_ed25519_keys_expire_at"] == [], "its first key"
        stored = read_to_end(settings)["crm"]
        assert stored.ed25519_public_keys == [keyed["ed25519_public_key"]]
        assert stored.secrets == [rotated["secret"]], "the HMAC secret is left as it was"
        code, out = await run("subscriptions", "rotate-secret", "crm", "--ed25519", "--grace", "60")
        assert code == 0 and "new Ed25519 public key for crm (version 5): whpk_" in out, out
        assert "the previous key(s) stay valid until" in out
        stored = read_to_end(settings)["crm"]
        assert len(stored.ed25519_keys) == 1 and len(stored.previous_ed25519_keys) == 1

        async with running(settings) as dispatcher:  # disabled: both events are dead-lettered
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(record_count, settings, settings.topics.dlq) < 2:
                assert time.monotonic() < deadline, "the events were not dead-lettered"
            code, out = await run("dlq", "list")
            assert code == 0 and "crm" in out and "subscription disabled" in out
            assert out.splitlines()[0].split() == [
                "ID",
                "DEAD-LETTERED",
                "SUBSCRIPTION",
                "EVENT",
                "ATTEMPTS",
                "STATUS",
                "REASON",
            ]
            code, out = await run("dlq", "list", "--json", "--subscription", "crm", "--since", "1h")
            assert code == 0 and {d["event_id"] for d in orjson.loads(out)["items"]} == {
                published["id"],
                "fixed",
            }
            assert (await run("dlq", "list", "--since", "yesterday-ish"))[0] == 2

            assert (await run("subscriptions", "enable", "crm"))[0] == 0
            await dispatcher_sees(dispatcher, "crm", lambda s: s.enabled)
            code, out = await run("dlq", "replay", "--subscription", "crm", "--event-id", "fixed", "--json")
            assert code == 0 and orjson.loads(out) == {"replayed": 1, "skipped": 0}
            await receiver.wait_count(1)
            assert receiver.requests[0].headers["webhook-id"] == "fixed"
            signatures = receiver.requests[0].headers["webhook-signature"].split()
            assert [s.partition(",")[0] for s in signatures] == ["v1", "v1", "v1a", "v1a"]
            Webhook(rotated["secret"]).verify(receiver.requests[0].body, receiver.requests[0].headers)
            Webhook(old_secret).verify(receiver.requests[0].body, receiver.requests[0].headers)

            code, out = await run("replay", "crm", "--since", "1h", "--json")
            assert code == 0, out
            job = orjson.loads(out)
            assert job["status"] == "succeeded" and job["matched"] == 2 and job["written"] == 2
            await receiver.wait_count(3)
            assert sorted(r.headers["webhook-id"] for r in receiver.requests[1:]) == sorted(
                [published["id"], "fixed"]
            )
            assert (await run("replay", "crm", "--since", "1h", "--until", "2h"))[0] == 2
            assert (await run("replay", "nope", "--since", "1h"))[0] == 1

    # the CLI's job wrote its start and end to the ops topic, like the API's jobs
    ops = [orjson.loads(m.value()) for m in read_topic(settings, settings.topics.ops, 2)]
    assert {"fanout.job.started", "fanout.job.finished"} <= {o["event"] for o in ops}
