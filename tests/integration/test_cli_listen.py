"""``fanout listen``'s receiver verifies Standard Webhooks signatures with the inbound verifier: a
reference-library signature by any given secret is "signature ok"; a tampered body, another secret or
a stale timestamp is "SIGNATURE INVALID"; without secrets nothing is checked."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks.webhooks import Webhook

from fanout.commands.listen import make_app
from tests.unit.factories import OTHER_SECRET, SECRET


async def test_listen_reports_whether_each_signature_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    body = b'{"type": "user.created", "data": {"id": 1}}'

    def signed(secret: str, at: int) -> dict[str, str]:
        signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(at, UTC), body.decode())
        return {"webhook-id": "msg_1", "webhook-timestamp": str(at), "webhook-signature": signature}

    now = int(time.time())
    cases = [
        ([SECRET], signed(SECRET, now), body, True),
        ([OTHER_SECRET, SECRET], signed(SECRET, now), body, True),
        ([SECRET], signed(SECRET, now), body + b" ", False),
        ([OTHER_SECRET], signed(SECRET, now), body, False),
        ([SECRET], signed(SECRET, now - 600), body, False),
        ([], signed(SECRET, now), body, None),
    ]
    for secrets, headers, sent, expected in cases:
        async with TestClient(TestServer(make_app(secrets, 204, as_json=True))) as client:
            response = await client.post("/hook", data=sent, headers=headers)
            assert response.status == 204
        printed = orjson.loads(capsys.readouterr().out.splitlines()[-1])
        assert (printed["id"], printed["verified"]) == ("msg_1", expected), (secrets, expected)
