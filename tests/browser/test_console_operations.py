"""Operating fanout from the console in a real Chromium, against a live broker, API, dispatcher and
receiver: disable, dead-letter, enable, replay from the dead-letters page, delivered; the subscription
page's actions (test event, secret rotation shown once, rate limit, a concurrent change refused);
a time-range replay watched to the end."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from fanout.api.console.session import CSRF_FIELD
from tests.browser.console import chromium, running_console, sign_in, text_of
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, dispatcher_sees, source_topic
from tests.integration.engine import apply, running, subscription
from tests.receivers import Receiver


async def _dead_letters(api, subscription_id: str, want: int, timeout: float = 60) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while True:
        status, _, page = await api.call("GET", "/v1/dead-letters", params={"subscription": subscription_id})
        assert status == 200, page
        if len(page["items"]) >= want:
            return list(page["items"])
        assert time.monotonic() < deadline, f"{want} dead letters for {subscription_id} never arrived"
        await asyncio.sleep(0.2)


async def test_disable_in_the_browser_dead_letters_then_replay_delivers(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    async with Receiver() as receiver:
        await apply(settings, [subscription("crm", receiver.url, [topic])])
        async with running(settings) as dispatcher, running_console(settings) as api, chromium() as browser:
            page = await browser.page()
            await sign_in(page, api.base, FULL_KEY)
            await page.goto(api.base + "/console/subscriptions/crm")
            await page.fill("#reason", "maintenance window")
            await page.click("#disable")
            await page.wait_for_selector("#enable")
            assert await text_of(page, "#sub-state") == "disabled"
            assert "maintenance window" in await text_of(page, "#disabled-reason")
            await dispatcher_sees(dispatcher, "crm", lambda s: not s.enabled)

            status, _, published = await api.call(
                "POST", "/v1/events", {"event": "order.paid", "data": {"n": 1}}
            )
            assert status == 202
            [dead] = await _dead_letters(api, "crm", 1)
            assert dead["reason"] == "subscription disabled" and dead["event_id"] == published["id"]
            assert receiver.requests == []

            await page.click("#enable")
            await page.wait_for_selector("#disable")
            await dispatcher_sees(dispatcher, "crm", lambda s: s.enabled)

            await page.click("header nav a:has-text('Dead letters')")
            await page.fill("#f-subscription", "crm")
            await page.fill("#f-reason", "disabled")
            await page.click("form[aria-label='Filter dead letters'] button")
            row = page.locator(f"tr.dead-letter[data-event='{published['id']}']")
            assert "subscription disabled" in await row.locator("[data-col=reason]").inner_text()
            await row.locator("input[name=ids]").check()
            await page.click("#replay-selected")
            await page.wait_for_selector("#replay-result")
            assert await text_of(page, "#replay-result") == "Replayed 1 dead letters."

            await receiver.wait_count(1)
            assert receiver.requests[0].headers["webhook-id"] == published["id"]


async def test_subscription_actions_and_a_concurrent_change(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    async with Receiver() as receiver:
        await apply(settings, [subscription("crm", receiver.url, [source_topic(settings)])])
        async with running_console(settings) as api, chromium() as browser:
            page = await browser.page()
            await sign_in(page, api.base, FULL_KEY)
            await page.goto(api.base + "/console/subscriptions/crm")

            await page.click("#send-test")
            await page.wait_for_selector("#notice .notice.ok")
            assert "Test event delivered: HTTP 204" in await text_of(page, "#notice")
            await receiver.wait_count(1)
            assert receiver.requests[0].headers["webhook-id"].startswith("test_")

            await page.fill("#grace", "600")
            await page.click("#rotate")
            await page.wait_for_selector("#new-secret")
            secret = await text_of(page, "#new-secret")
            assert secret.startswith("whsec_")
            assert "stay valid until" in await text_of(page, "#notice")
            await page.goto(api.base + "/console/subscriptions/crm")  # shown once: not on the next view
            assert await page.query_selector("#new-secret") is None
            assert secret not in await page.content()

            await page.fill("#per-second", "25")
            await page.fill("#burst", "5")
            await page.click("#save-rate")
            await page.wait_for_selector("#notice .notice.ok")
            assert await text_of(page, "#sub-rate") == "25.0/s, burst 5"
            status, _, sub = await api.call("GET", "/v1/subscriptions/crm")
            assert sub["rate_limit"] == {"per_second": 25.0, "burst": 5}

            # someone else writes while this page is open: the page's write is refused, not lost
            status, _, _ = await api.call(
                "PATCH", "/v1/subscriptions/crm", {"description": "changed elsewhere"}
            )
            assert status == 200
            await page.fill("#reason", "stale page")
            await page.click("#disable")
            await page.wait_for_selector("#notice .notice.bad")
            assert "changed by someone else" in await text_of(page, "#notice")
            status, _, sub = await api.call("GET", "/v1/subscriptions/crm")
            assert sub["enabled"] is True and sub["description"] == "changed elsewhere"
            assert await text_of(page, "#sub-version") == str(
                sub["version"]
            )  # the page shows the current one

            version = await page.get_attribute("#actions form input[name=version]", "value")
            token = await page.get_attribute(f"input[name={CSRF_FIELD}]", "value")
            assert version == str(sub["version"]) and token


async def test_a_time_range_replay_is_started_and_watched_to_the_end(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("crm", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    async with running_console(settings) as api, chromium() as browser:
        since = datetime.now(UTC).replace(microsecond=0)
        for n in range(3):
            status, _, _ = await api.call("POST", "/v1/events", {"event": "order.paid", "data": {"n": n}})
            assert status == 202
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        await page.goto(api.base + "/console/replays")
        await page.select_option("#r-subscription", "crm")
        await page.fill("#r-since", since.strftime("%Y-%m-%dT%H:%M:%S"))
        await page.click("#start-replay")
        await page.wait_for_url(lambda url: "/console/replays/job_" in url)
        await page.wait_for_selector("#job[data-status=succeeded]", timeout=60_000)  # htmx polls it
        assert await text_of(page, "#job-matched") == "3"
        assert await text_of(page, "#job-written") == "3"
        await page.goto(api.base + "/console/replays")
        assert await page.locator("table a[href^='/console/replays/job_']").count() == 1
