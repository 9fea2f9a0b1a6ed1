"""rotate-secret through the API, delivered by a real dispatcher: during the grace period every delivery
carries a signature by the new and by the old secret (checked with the standardwebhooks library); a
rotation without grace drops the secret it replaced."""

from __future__ import annotations

import asyncio
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fanout.app import DispatcherApp
from tests.integration.api import api_settings, create_api_topics, running_api, source_topic
from tests.integration.engine import running
from tests.receivers import Received, Receiver


async def table_version(app: DispatcherApp, sub_id: str, version: int, timeout: float = 30) -> None:
    """Poll (with a deadline) until the dispatcher's routing table has ``version`` of ``sub_id``."""
    deadline = time.monotonic() + timeout
    while True:
        sub = app.dispatcher.table.get(sub_id) if app.dispatcher else None
        if sub is not None and sub.version >= version:
            return
        assert time.monotonic() < deadline, f"the dispatcher did not see version {version} of {sub_id}"
        await asyncio.sleep(0.05)


def verifies(secret: str, request: Received) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


async def test_both_signatures_during_the_grace_period(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    async with Receiver() as receiver, running_api(settings) as api:
        status, _, created = await api.call(
            "POST", "/v1/subscriptions", {"id": "crm", "url": receiver.url, "topics": [topic]}
        )
        assert status == 201
        first = created["secret"]
        async with running(settings) as dispatcher:
            await table_version(dispatcher, "crm", 1)
            await api.call("POST", "/v1/events", {"event": "a"})
            await receiver.wait_count(1)

            status, _, rotated = await api.call(
                "POST", "/v1/subscriptions/crm/rotate-secret", {"grace_seconds": 600}
            )
            second = rotated["secret"]
            await table_version(dispatcher, "crm", rotated["version"])
            await api.call("POST", "/v1/events", {"event": "b"})
            await receiver.wait_count(2)

            status, _, again = await api.call(
                "POST", "/v1/subscriptions/crm/rotate-secret", {"grace_seconds": 0}
            )
            third = again["secret"]
            await table_version(dispatcher, "crm", again["version"])
            await api.call("POST", "/v1/events", {"event": "c"})
            await receiver.wait_count(3)

    before, during, after = receiver.requests
    assert len(before.headers["webhook-signature"].split()) == 1 and verifies(first, before)
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verifies(second, during) and verifies(first, during), "both secrets during the grace period"
    assert len(after.headers["webhook-signature"].split()) == 2
    assert verifies(third, after) and verifies(first, after), "the first is still within its grace period"
    assert not verifies(second, after), "replaced without grace: dropped at once"
    with pytest.raises(WebhookVerificationError):
        Webhook(second).verify(after.body, after.headers)
