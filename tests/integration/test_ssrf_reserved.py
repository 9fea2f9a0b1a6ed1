"""The SSRF guard refuses the whole reserved address space (issue 13, defect 5), at every entry point:
a subscription written through the API (400 naming the URL), a routes file, and a subscription already
in the topic (refused at send time, dead-lettered with the reason, the endpoint never contacted). The
settings allow 127.0.0.0/8 and http:// as every test does: IPv6 forms that merely carry 127.0.0.1
(IPv4-compatible ``::127.0.0.1``, SIIT, 6to4) are still refused."""

from __future__ import annotations

import asyncio

import pytest

from fanout.control.routes import check_url_allowed
from fanout.model.errors import ValidationFailed
from tests.integration.api import api_settings, create_api_topics, running_api, source_topic
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    header,
    produce,
    read_topic,
    running,
    subscription,
)

RESERVED_HOSTS = [
    "[::127.0.0.1]",
    "[::7f00:1]",
    "[::ffff:0:7f00:1]",
    "[2002:7f00:1::1]",
    "[fec0::1]",
    "0.0.0.1",
]


async def test_reserved_addresses_are_refused_when_written_through_the_api(
    bootstrap: str, unique: str
) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    async with running_api(settings) as api:
        for i, host in enumerate(RESERVED_HOSTS):
            body = {"id": f"s{i}", "url": f"http://{host}:8080/hook", "topics": [topic]}
            status, _, problem = await api.call("POST", "/v1/subscriptions", body)
            assert status == 400, (host, problem)
            assert problem["errors"] == [{"field": "body/url", "message": problem["errors"][0]["message"]}]
            assert "SSRF guard" in problem["detail"], problem
        status, _, listed = await api.call("GET", "/v1/subscriptions")
        assert listed["items"] == []
        status, _, created = await api.call(
            "POST", "/v1/subscriptions", {"id": "ok", "url": "http://127.0.0.1:8080/hook", "topics": [topic]}
        )
        assert status == 201, created


@pytest.mark.parametrize("host", RESERVED_HOSTS)
def test_reserved_addresses_are_refused_in_routes_files(bootstrap: str, unique: str, host: str) -> None:
    settings = engine_settings(bootstrap, unique)
    sub = subscription("routed", f"http://{host}:8080/hook", ["orders"])
    with pytest.raises(ValidationFailed, match=r"routed\.url.*SSRF guard"):
        check_url_allowed(sub, settings.delivery)


async def test_a_reserved_literal_in_the_topic_is_refused_at_send_time(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    await apply(
        settings, [subscription("compat", "http://[::127.0.0.1]:9/hook", [topic], retry={"schedule": [0.1]})]
    )
    async with running(settings):
        produce(settings, topic, events(1))
        (letter,) = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 1)
    reason = header(letter, "fanout-reason") or ""
    assert "address ::7f00:1 is not allowed (SSRF guard)" in reason, reason
    assert header(letter, "fanout-attempt") == "1", "a permanent refusal, never retried"
