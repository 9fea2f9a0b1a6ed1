"""Screenshots of every console page at 1280 px, for the README: ``scripts/console-screenshots``.

Runs against the broker at FANOUT_KAFKA__BOOTSTRAP_SERVERS (topics under a prefix of its own), with a
real dispatcher and receivers for the dead letters and a replay job, and an in-memory history (the
delivery history store is not plugged in yet) for the figures. Writes docs/console/*.png.
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

from fanout.api.console.history import Attempt  # noqa: E402
from tests.browser.console import chromium, running_console, sign_in  # noqa: E402
from tests.browser.fake_history import EventInfo, FakeHistory  # noqa: E402
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, source_topic  # noqa: E402
from tests.integration.engine import apply, running, subscription  # noqa: E402
from tests.receivers import Receiver  # noqa: E402

OUT = ROOT / "docs" / "console"
NAMES = ["billing", "crm", "search-indexer", "analytics", "audit-log", "email", "fraud-check", "inventory"]


def history_for(now: float) -> FakeHistory:
    rng = random.Random(7)
    history = FakeHistory()
    for name in NAMES + [f"partner-{n:02d}" for n in range(12)]:
        failing = name in ("crm", "partner-03")
        rate = 0.4 if failing else 0.97
        for i in range(rng.randint(30, 160)):
            at = now - rng.uniform(0, 86400 if i % 3 else 3600)
            ok = rng.random() < rate
            history.add(
                Attempt(
                    f"evt_{name}_{i}", name, 1, at, "delivered" if ok else "retry",
                    status=204 if ok else rng.choice([500, 502, 503]), latency_ms=rng.lognormvariate(3, 0.6),
                    response="" if ok else "upstream unavailable",
                )
            )  # fmt: skip
        if failing:
            for k in range(4):
                history.add(
                    Attempt(
                        f"evt_{name}_tail{k}",
                        name,
                        3,
                        now - 200 + k * 30,
                        "retry",
                        status=503,
                        latency_ms=900,
                    )
                )
    history.add(
        Attempt("evt_0f3a9c", "billing", 1, now - 95, "retry", status=503, latency_ms=211, response="busy", not_before=now - 90),
        Attempt("evt_0f3a9c", "billing", 2, now - 89, "delivered", status=204, latency_ms=38),
        Attempt("evt_0f3a9c", "crm", 1, now - 95, "retry", status=500, latency_ms=120, response="db timeout", not_before=now - 60),
        Attempt("evt_0f3a9c", "crm", 2, now - 58, "retry", status=500, latency_ms=131, response="db timeout", not_before=now + 240),
        Attempt("evt_0f3a9c", "search-indexer", 0, now - 95, "disabled", reason="subscription disabled"),
    )  # fmt: skip
    history.events["evt_0f3a9c"] = EventInfo("order.paid", now - 96, "shop.events", 2, 18231)
    return history


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
        history = history_for(time.time())
        async with (
            running(settings),
            running_console(settings, history) as api,
            chromium(1280, 900) as browser,
        ):
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
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*.png"))), "under", OUT)


if __name__ == "__main__":
    uvloop.run(main())
