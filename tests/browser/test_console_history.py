"""The history-backed parts of the console, in a real Chromium against a live broker and API.

The delivery history (issue 15) is not plugged in yet: these tests feed ``FakeHistory`` (an in-memory
``HistoryQueries``) and check the pages against what that interface answers. When the real store is
plugged in, the same assertions hold against ``GET /v1/subscriptions/{id}/stats``.
"""

from __future__ import annotations

import time

from playwright.async_api import expect

from fanout.api.console.history import Attempt
from fanout.api.console.render import ms, pct
from tests.browser.console import chromium, running_console, sign_in, text_of
from tests.browser.fake_history import FakeHistory
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, source_topic
from tests.integration.engine import apply, subscription


def _feed(history: FakeHistory, now: float) -> None:
    for i in range(40):  # healthy: 40 delivered
        history.add(
            Attempt(f"h{i}", "healthy", 1, now - 3000 + i * 60, "delivered", status=204, latency_ms=10 + i)
        )
    for i in range(20):  # flaky: every third attempt fails, each failure retried
        failed = i % 3 == 0
        outcome = "retry" if failed else "delivered"
        history.add(
            Attempt(
                f"f{i}",
                "flaky",
                1,
                now - 2400 + i * 90,
                outcome,
                status=500 if failed else 200,
                latency_ms=30.0 + i,
            )
        )
    for i in range(6):  # failing: its latest attempts all failed, two dead-lettered
        outcome = "dead_lettered" if i >= 4 else "retry"
        history.add(
            Attempt(
                f"x{i}",
                "failing",
                1,
                now - 600 + i * 60,
                outcome,
                error="ConnectTimeout",
                reason="max attempts" if i >= 4 else None,
            )
        )
    history.add(
        Attempt("old", "healthy", 1, now - 7200, "delivered", status=204, latency_ms=5)
    )  # outside the hour


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
    history = FakeHistory()
    now = time.time()
    _feed(history, now)
    async with running_console(settings, history) as api, chromium() as browser:
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
            stats = await history.stats(sub_id, 3600)
            row = page.locator(f"tr[data-subscription='{sub_id}']")
            assert await row.locator("[data-col=attempts]").inner_text() == str(stats.attempts)
            assert await row.locator("[data-col=success]").inner_text() == pct(stats.success_rate)
            assert await row.locator("[data-col=p99]").inner_text() == ms(stats.p99_ms)
            assert await row.locator("[data-col=dead]").inner_text() == str(stats.dead_lettered)
            assert await row.locator("svg.spark").count() == 1
        assert (
            await text_of(page, "tr[data-subscription='healthy'] [data-col=attempts]") == "40"
        )  # not the old one
        assert await text_of(page, "tr[data-subscription='failing'] .badge") == "failing"
        assert "5 min ago" in await text_of(page, "tr[data-subscription='failing'] [data-col=failure]")

        await page.fill("#q", "bulk-098")
        await page.wait_for_url(lambda url: "q=bulk-098" in url)
        await expect(page.locator("tbody tr[data-subscription]")).to_have_count(10)
        await page.fill("#q", "paused")
        await page.wait_for_selector("tr[data-subscription='paused'] .reason")
        assert await page.locator("tbody tr[data-subscription]").count() == 1
        assert await text_of(page, "tr[data-subscription='paused'] .reason") == "by ops"


async def test_event_lookup_shows_each_attempt_and_the_final_state(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("crm", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    history = FakeHistory()
    now = time.time()
    history.add(
        Attempt(
            "evt_42",
            "crm",
            1,
            now - 30,
            "retry",
            status=503,
            latency_ms=80,
            response="busy",
            not_before=now - 25,
        ),
        Attempt("evt_42", "crm", 2, now - 25, "delivered", status=204, latency_ms=12),
    )
    async with running_console(settings, history) as api, chromium() as browser:
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        await page.click("header nav a:has-text('Event lookup')")
        await page.fill("#event-id", "evt_42")
        await page.press("#event-id", "Enter")
        timeline = page.locator(".timeline-for[data-subscription='crm']")
        await timeline.wait_for()
        assert await timeline.locator("li.attempt").count() == 2
        first, second = await timeline.locator("li.attempt").all_inner_texts()
        assert "attempt 1" in first and "HTTP 503" in first and "busy" in first
        assert "attempt 2" in second and "HTTP 204" in second
        assert await timeline.locator("[data-state]").get_attribute("data-state") == "delivered"

        await page.fill("#event-id", "evt_unknown")
        await page.press("#event-id", "Enter")
        await page.wait_for_selector("#not-found")


async def test_subscription_health_and_the_failures_only_filter(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("flaky", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    history = FakeHistory()
    _feed(history, time.time())
    async with running_console(settings, history) as api, chromium() as browser:
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        await page.goto(api.base + "/console/subscriptions/flaky")
        stats = await history.stats("flaky", 86400)
        assert (await text_of(page, "[data-fact=attempts]")).startswith(f"{stats.attempts} ")
        assert await text_of(page, "[data-fact=success]") == pct(stats.success_rate)
        assert await page.locator("svg.chart rect").count() > 0
        assert await page.locator("tr.attempt").count() == 20
        await page.click("#failures-only")
        await expect(page.locator("tr.attempt")).to_have_count(7)
        outcomes = await page.locator("tr.attempt").evaluate_all("rows => rows.map(r => r.dataset.outcome)")
        assert set(outcomes) == {"retry"}
