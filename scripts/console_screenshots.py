"""Screenshots of every console page at 1280 px, for the README: ``scripts/console-screenshots``.

Runs against the broker at FANOUT_KAFKA__BOOTSTRAP_SERVERS (topics under a prefix of its own), with a
real dispatcher and receivers for the dead letters and a replay job, and the history index the console
reads (its records written to the attempts topic here: the dispatcher does not write them yet).
Writes docs/console/*.png, then deletes its topics.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402

from fanout.history.record import AttemptRecord, Body, Origin, Outcome, Response, Retry  # noqa: E402
from tests.browser.console import chromium, running_console, sign_in  # noqa: E402
from tests.browser.history import indexed, write_attempts  # noqa: E402
from tests.conftest import delete_topics  # noqa: E402
from tests.history_records import make  # noqa: E402
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, source_topic  # noqa: E402
from tests.integration.engine import apply, running, subscription  # noqa: E402
from tests.receivers import Receiver  # noqa: E402

OUT = ROOT / "docs" / "console"
NAMES = ["billing", "crm", "search-indexer", "analytics", "audit-log", "email", "fraud-check", "inventory"]


def history_for(now_ms: int) -> list[AttemptRecord]:
    """A day of attempt records for the subscriptions (two of them failing), and one event seen by
    three subscriptions: retried then delivered, still retrying, and disabled."""
    rng = random.Random(7)
    out: list[AttemptRecord] = []
    for name in NAMES + [f"partner-{n:02d}" for n in range(12)]:
        failing = name in ("crm", "partner-03")
        rate = 0.4 if failing else 0.97
        for i in range(rng.randint(30, 160)):
            at = now_ms - int(rng.uniform(0, 86_400_000 if i % 3 else 3_600_000))
            ok = rng.random() < rate
            outcome = Outcome.DELIVERED if ok else Outcome.RETRY_SCHEDULED
            status = 204 if ok else rng.choice([500, 502, 503])
            out.append(make(outcome, f"evt_{name}_{i}", name, at, 1, status, rng.lognormvariate(3, 0.6)))
        if failing:
            for k in range(4):
                out.append(
                    make(
                        Outcome.RETRY_SCHEDULED,
                        f"evt_{name}_tail{k}",
                        name,
                        now_ms - 200_000 + k * 30_000,
                        3,
                        503,
                        900.0,
                    )
                )
    event = {
        "event_type": "order.paid",
        "event_time_ms": now_ms - 96_000,
        "origin": Origin("shop.events", 2, 18231, now_ms - 96_000),
    }
    busy = Response(503, "text/plain", Body.of(b"busy", 1024))
    timeout = Response(500, "text/plain", Body.of(b"db timeout", 1024))
    out += [
        make(
            Outcome.RETRY_SCHEDULED,
            "evt_0f3a9c",
            "billing",
            now_ms - 95_000,
            1,
            503,
            211.0,
            response=busy,
            retry=Retry(0, now_ms - 90_000),
            **event,
        ),
        make(Outcome.DELIVERED, "evt_0f3a9c", "billing", now_ms - 89_000, 2, 204, 38.0, **event),
        make(
            Outcome.RETRY_SCHEDULED,
            "evt_0f3a9c",
            "crm",
            now_ms - 95_000,
            1,
            500,
            120.0,
            response=timeout,
            retry=Retry(0, now_ms - 60_000),
            **event,
        ),
        make(
            Outcome.RETRY_SCHEDULED,
            "evt_0f3a9c",
            "crm",
            now_ms - 58_000,
            2,
            500,
            131.0,
            response=timeout,
            retry=Retry(1, now_ms + 240_000),
            **event,
        ),
        make(Outcome.DISABLED, "evt_0f3a9c", "search-indexer", now_ms - 95_000, 0, **event),
    ]
    return out


async def main() -> None:
    bootstrap = os.environ.get("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    unique = "shots" + uuid.uuid4().hex[:6]
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    OUT.mkdir(parents=True, exist_ok=True)

    async def refuse(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=422, text="unknown customer")

    async with Receiver() as ok, Receiver(refuse) as bad:
        subs = [
            subscription(n, ok.url, [topic], description=f"{n} service")
            for n in NAMES
            if n not in ("crm", "search-indexer")
        ]
        subs += [subscription(f"partner-{n:02d}", ok.url, [topic]) for n in range(12)]
        subs.append(subscription("crm", bad.url, [topic], description="CRM sync"))
        subs.append(
            subscription(
                "search-indexer", ok.url, [topic], enabled=False, disabled_reason="reindexing until Monday"
            )
        )
        await apply(settings, subs)
        start = datetime.now(UTC) - timedelta(seconds=5)
        records = history_for(int(time.time() * 1000))
        write_attempts(settings, records)
        async with (
            running(settings),
            running_console(settings) as api,
            chromium(1280, 900) as browser,
        ):
            await indexed(api, len(records))
            for n in range(3):
                await api.call("POST", "/v1/events", {"event": "order.paid", "data": {"order": 1000 + n}})
            deadline = time.monotonic() + 60
            while True:
                _, _, page_ = await api.call("GET", "/v1/dead-letters")
                if len(page_["items"]) >= 6 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            page = await browser.page()
            await page.goto(api.base + "/console/login")
            await page.screenshot(path=str(OUT / "sign-in.png"))
            await sign_in(page, api.base, FULL_KEY)
            await page.goto(api.base + "/console/?sort=volume&dir=desc")
            await page.screenshot(path=str(OUT / "overview.png"), full_page=True)
            await page.goto(api.base + "/console/subscriptions/billing")
            await page.click("#send-test")
            await page.wait_for_selector("#notice .notice")
            await page.screenshot(path=str(OUT / "subscription.png"), full_page=True)
            await page.goto(api.base + "/console/events?id=evt_0f3a9c")
            await page.screenshot(path=str(OUT / "event-lookup.png"), full_page=True)
            await page.goto(api.base + "/console/dead-letters")
            await page.screenshot(path=str(OUT / "dead-letters.png"), full_page=True)
            await page.goto(api.base + "/console/replays")
            await page.select_option("#r-subscription", "billing")
            await page.fill("#r-since", start.strftime("%Y-%m-%dT%H:%M:%S"))
            await page.click("#start-replay")
            await page.wait_for_selector("#job[data-status=succeeded]", timeout=60_000)
            await page.screenshot(path=str(OUT / "replay-job.png"), full_page=True)
    delete_topics(bootstrap, unique)
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))), "under", OUT)


if __name__ == "__main__":
    uvloop.run(main())
