"""The history-backed pages of the console, in a real Chromium against a live broker, API (running
the history indexer over the real attempts topic) and, for event lookup, a live dispatcher and
receiver whose attempts the dispatcher records itself. The numbers on the pages are checked against
the history store's own answers."""

from __future__ import annotations

import time

from aiohttp import web
from playwright.async_api import expect

from fanout.api.console.render import ms, pct
from tests.browser.console import chromium, history_of, running_console, sign_in, text_of
from tests.browser.history import indexed, sample, write_attempts
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, source_topic
from tests.integration.engine import apply, running, subscription
from tests.receivers import Receiver


async def test_overview_numbers_equal_the_stats_and_sort_and_search_work(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    subs = [
        subscription(name, "http://127.0.0.1:9/hook", [topic]) for name in ("healthy", "flaky", "failing")
    ]
    subs.append(
        subscription("paused", "http://127.0.0.1:9/hook", [topic], enabled=False, disabled_reason="by ops")
    )
    subs += [subscription(f"bulk-{n:04d}", "http://127.0.0.1:9/hook", [topic]) for n in range(996)]
    await apply(settings, subs)  # 1,000 subscriptions
    records = sample(int(time.time() * 1000))
    write_attempts(settings, records)
    async with running_console(settings) as api, chromium() as browser:
        await indexed(api, len(records))
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        assert (await text_of(page, "#total-subscriptions")).startswith("1000")
        assert await text_of(page, "#total-attempts") == str(40 + 20 + 6)
        assert "1 disabled" in await text_of(page, "#total-subscriptions")
        assert "1 failing" in await text_of(page, "#total-subscriptions")

        await page.click("thead a:has-text('Attempts')")  # numbers first, highest first
        await page.wait_for_url(lambda url: "sort=volume" in url)
        ids = await page.locator("tbody tr[data-subscription]").evaluate_all(
            "rows => rows.map(r => r.dataset.subscription)"
        )
        assert ids[:3] == ["healthy", "flaky", "failing"] and len(ids) == 100  # a page of the 1,000
        for sub_id in ("healthy", "flaky", "failing"):
            status, _, stats = await api.call("GET", f"/v1/subscriptions/{sub_id}/stats?window=1h")
            assert status == 200
            row = page.locator(f"tr[data-subscription='{sub_id}']")
            assert await row.locator("[data-col=attempts]").inner_text() == str(stats["attempted"])
            assert await row.locator("[data-col=success]").inner_text() == pct(stats["success_rate"])
            assert await row.locator("[data-col=p99]").inner_text() == ms(stats["latency_ms"]["p99"])
            assert await row.locator("[data-col=dead]").inner_text() == str(stats["counts"]["dead_lettered"])
            assert await row.locator("svg.spark").count() == 1
        assert (
            await text_of(page, "tr[data-subscription='healthy'] [data-col=attempts]") == "40"
        )  # not the old one
        assert await text_of(page, "tr[data-subscription='flaky'] [data-col=success]") == pct(13 / 20)
        assert await text_of(page, "tr[data-subscription='failing'] .badge") == "failing"
        failure = await text_of(page, "tr[data-subscription='failing'] [data-col=failure]")
        assert "5 min ago" in failure and "ConnectTimeout" in failure

        await page.fill("#q", "bulk-098")
        await page.wait_for_url(lambda url: "q=bulk-098" in url)
        await expect(page.locator("tbody tr[data-subscription]")).to_have_count(10)
        await page.fill("#q", "paused")
        await page.wait_for_selector("tr[data-subscription='paused'] .reason")
        assert await page.locator("tbody tr[data-subscription]").count() == 1
        assert await text_of(page, "tr[data-subscription='paused'] .reason") == "by ops"


async def test_an_event_delivered_after_one_retry_shows_both_attempts(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)

    async def first_busy(request: web.Request, n: int) -> web.StreamResponse:
        if n == 0:
            return web.Response(status=503, text="busy", content_type="text/plain")
        return web.Response(status=204)

    async with Receiver(first_busy) as receiver:
        await apply(settings, [subscription("crm", receiver.url, [source_topic(settings)])])
        async with running(settings), running_console(settings) as api, chromium() as browser:
            status, _, published = await api.call(
                "POST", "/v1/events", {"event": "order.paid", "data": {"n": 1}}
            )
            assert status == 202
            await receiver.wait_count(2, timeout=60)  # the 503, then the retry the dispatcher scheduled
            event_id = published["id"]
            assert [r.headers["webhook-id"] for r in receiver.requests] == [event_id, event_id]
            await indexed(api, 2)  # the dispatcher's own records of both attempts
            history = history_of(api).event(event_id)
            assert history is not None
            assert [r.outcome.value for r in history.subscriptions[0].attempts] == [
                "retry_scheduled",
                "delivered",
            ]

            page = await browser.page()
            await sign_in(page, api.base, FULL_KEY)
            await page.click("header nav a:has-text('Event lookup')")
            await page.fill("#event-id", event_id)
            await page.press("#event-id", "Enter")
            timeline = page.locator(".timeline-for[data-subscription='crm']")
            await timeline.wait_for()
            assert await timeline.locator("li.attempt").count() == 2
            first, second = await timeline.locator("li.attempt").all_inner_texts()
            assert "attempt 1" in first and "HTTP 503" in first and "busy" in first and "retry" in first
            assert "attempt 2" in second and "HTTP 204" in second
            assert await timeline.locator("[data-state]").get_attribute("data-state") == "delivered"

            await page.fill("#event-id", "evt_unknown")
            await page.press("#event-id", "Enter")
            await page.wait_for_selector("#not-found")


async def test_subscription_health_and_the_failures_only_filter(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("flaky", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    records = sample(int(time.time() * 1000))
    write_attempts(settings, records)
    async with running_console(settings) as api, chromium() as browser:
        await indexed(api, len(records))
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        await page.goto(api.base + "/console/subscriptions/flaky")
        totals = history_of(api).stats("flaky", 86400).totals
        assert (await text_of(page, "[data-fact=attempts]")).startswith(f"{totals.attempted} ")
        assert await text_of(page, "[data-fact=success]") == pct(totals.success_rate)
        assert await page.locator("svg.chart rect").count() > 0
        assert await page.locator("tr.attempt").count() == 20
        await page.click("#failures-only")
        await expect(page.locator("tr.attempt")).to_have_count(7)
        outcomes = await page.locator("tr.attempt").evaluate_all("rows => rows.map(r => r.dataset.outcome)")
        assert set(outcomes) == {"retry"}
