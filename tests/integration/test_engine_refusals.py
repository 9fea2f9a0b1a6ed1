"""Refusals: http:// endpoints without the setting, and the SSRF guard at connection time."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from click.testing import CliRunner

from fanout.cli import main
from fanout.config import DeliverySettings
from fanout.control.routes import check_url_allowed
from fanout.model.errors import ValidationFailed
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    header,
    produce,
    read_topic,
    running,
    settings_env,
    subscription,
)
from tests.receivers import Receiver


class SwitchableResolver(AbstractResolver):
    """Resolves names from a table the test changes; records every lookup."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        address = self.table[host]
        return [{"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


def test_http_endpoint_is_refused_by_apply_without_the_setting(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = engine_settings(bootstrap, unique)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FANOUT_DELIVERY__ALLOW_HTTP", "false")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "subscriptions:\n  - id: plain\n    url: http://hooks.example.com/x\n    topics: [orders]\n"
        "    secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n"
    )
    result = CliRunner().invoke(main, ["subscriptions", "apply", "-f", str(routes)])
    assert result.exit_code == 2
    assert "plain.url" in result.output and "http:// endpoints are refused" in result.output
    with pytest.raises(ValidationFailed, match=r"plain\.url"):
        check_url_allowed(subscription("plain", "http://hooks.example.com/x", ["orders"]), DeliverySettings())


async def test_http_endpoint_in_the_topic_is_refused_at_send_time(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique, delivery={"allow_http": False})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with Receiver() as receiver:
        await apply(settings, [subscription("plain", receiver.url, [topic])])
        async with running(settings):
            produce(settings, topic, events(1))
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 1)
    assert receiver.requests == []
    assert "http:// endpoints are refused" in (header(letters[0], "fanout-reason") or "")


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254"])
async def test_resolution_changed_to_a_private_address_is_refused_without_connecting(
    bootstrap: str, unique: str, address: str
) -> None:
    settings = engine_settings(bootstrap, unique, delivery={"dns_cache_seconds": 0})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])

    async def close_each_connection(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=204, headers={"Connection": "close"})  # every send resolves anew

    async with Receiver(close_each_connection) as receiver:
        resolver = SwitchableResolver({"hooks.test": "127.0.0.1"})
        url = f"http://hooks.test:{receiver.port}/hook"
        await apply(settings, [subscription("switch", url, [topic])])
        async with running(settings, resolver=resolver):
            produce(settings, topic, events(1))
            await receiver.wait_count(1, 30)
            resolver.table["hooks.test"] = address
            produce(settings, topic, events(1, start=1))
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 1)
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["e0"]
    reason = header(letters[0], "fanout-reason") or ""
    assert address in reason and "SSRF guard" in reason
    assert header(letters[0], "fanout-event-id") == "e1"
    assert resolver.lookups.count("hooks.test") >= 2


async def test_redirects_are_not_followed(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with Receiver() as target:

        async def redirect(request: web.Request, n: int) -> web.StreamResponse:
            return web.Response(status=302, headers={"Location": target.url + "/elsewhere"})

        async with Receiver(redirect) as moved:
            await apply(settings, [subscription("moved", moved.url, [topic], retry={"schedule": [0.1]})])
            async with running(settings):
                produce(settings, topic, events(1))
                letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 1)
    assert target.requests == []
    assert len(moved.requests) == 2  # the first attempt and one retry, never the Location
    assert header(letters[0], "fanout-last-error") == "HTTP 302 (redirects are not followed)"
    assert header(letters[0], "fanout-reason") == "retries exhausted"
