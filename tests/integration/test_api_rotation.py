"""rotate-secret through the API, delivered by a real dispatcher: during the grace period every delivery
carries a signature by the new and by the old secret (checked with the standardwebhooks library); a
rotation without grace drops the secret it replaced."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.integration.api import api_settings, create_api_topics, dispatcher_sees, running_api, source_topic
from tests.integration.engine import running
from tests.receivers import Received, Receiver


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
            await dispatcher_sees(dispatcher, "crm", lambda s: s.version >= 1)
            await api.call("POST", "/v1/events", {"event": "a"})
            await receiver.wait_count(1)

            status, _, rotated = await api.call(
                "POST", "/v1/subscriptions/crm/rotate-secret", {"grace_seconds": 600}
            )
            second = rotated["secret"]
            await dispatcher_sees(dispatcher, "crm", lambda s: s.version >= rotated["version"])
            await api.call("POST", "/v1/events", {"event": "b"})
            await receiver.wait_count(2)

            status, _, again = await api.call(
                "POST", "/v1/subscriptions/crm/rotate-secret", {"grace_seconds": 0}
            )
            third = again["secret"]
            await dispatcher_sees(dispatcher, "crm", lambda s: s.version >= again["version"])
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
