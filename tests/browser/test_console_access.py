"""Who may do what in the console, in a real Chromium against a live broker and API: signing in and
out, a wrong key, a read-only key (no controls, and a forged POST refused), CSRF, and no request to
any host but fanout's."""

from __future__ import annotations

import time

from tests.browser.console import chromium, csrf_of, foreign, running_console, sign_in, text_of
from tests.browser.history import indexed, retried_once, write_attempts
from tests.integration.api import FULL_KEY, READ_KEY, api_settings, create_api_topics, source_topic
from tests.integration.engine import apply, subscription

INLINE = "[...document.scripts].filter(s => !s.src).length + document.querySelectorAll('[style]').length"


async def _setup(bootstrap: str, unique: str):  # type: ignore[no-untyped-def]
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("crm", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    return settings


async def test_sign_in_works_a_wrong_key_is_refused_and_sign_out_ends_the_session(
    bootstrap: str, unique: str
) -> None:
    settings = await _setup(bootstrap, unique)
    async with running_console(settings) as api, chromium() as browser:
        page = await browser.page()
        response = await page.goto(api.base + "/console/subscriptions/crm")
        assert response is not None and response.url.startswith(api.base + "/console/login")

        await page.fill("#credential", "fo_wrong_" + "x" * 30)
        async with page.expect_response(api.base + "/console/login") as refused:
            await page.click("form button[type=submit]")
        assert (await refused.value).status == 401
        assert "not a valid API key" in await text_of(page, "#signin-error")
        assert not [c for c in await browser.context.cookies() if c["name"] == "fanout_console"]

        await page.fill("#credential", FULL_KEY)
        await page.click("form button[type=submit]")
        await page.wait_for_selector("h1:has-text('crm')")  # back where it was going
        assert page.url == api.base + "/console/subscriptions/crm"
        assert "Signed in as full" in await text_of(page, "header .who")

        cookie = next(c for c in await browser.context.cookies() if c["name"] == "fanout_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console/"
        assert FULL_KEY not in cookie["value"]
        assert "fanout_console=" not in await page.evaluate("document.cookie")  # no page script can read it

        await page.click("header .who button")
        await page.wait_for_selector("#credential")
        assert not [c for c in await browser.context.cookies() if c["name"] == "fanout_console"]
        # the old cookie, put back, is refused: the session was revoked, not only forgotten
        await browser.context.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path")}])  # type: ignore[misc]
        response = await page.goto(api.base + "/console/")
        assert response is not None and "/console/login" in response.url


async def test_a_read_only_key_sees_no_action_and_a_forged_post_gets_403(bootstrap: str, unique: str) -> None:
    settings = await _setup(bootstrap, unique)
    async with running_console(settings) as api, chromium() as browser:
        page = await browser.page()
        await sign_in(page, api.base, READ_KEY)
        await page.goto(api.base + "/console/subscriptions/crm")
        await page.wait_for_selector("#definition-title")
        for control in ("#actions", "#disable", "#enable", "#send-test", "#rotate", "#save-rate"):
            assert await page.query_selector(control) is None, control
        await page.goto(api.base + "/console/dead-letters")
        assert await page.query_selector("#replay-selected") is None
        assert await page.query_selector("#replay-all") is None
        await page.goto(api.base + "/console/replays")
        assert await page.query_selector("#start-replay") is None

        token = await csrf_of(page)  # a valid session and CSRF token: only the scope is missing
        forged = await page.request.post(
            api.base + "/console/subscriptions/crm/disable",
            form={"csrf_token": token, "version": "1", "reason": "forged"},
        )
        assert forged.status == 403
        assert "subscriptions:write" in await forged.text()
        replay = await page.request.post(
            api.base + "/console/dead-letters/replay", form={"csrf_token": token, "scope": "all"}
        )
        assert replay.status == 403
        status, _, sub = await api.call("GET", "/v1/subscriptions/crm")
        assert status == 200 and sub["enabled"] is True and sub["version"] == 1


async def test_a_post_without_the_csrf_token_is_refused(bootstrap: str, unique: str) -> None:
    settings = await _setup(bootstrap, unique)
    async with running_console(settings) as api, chromium() as browser:
        page = await browser.page()
        login = await page.request.post(api.base + "/console/login", form={"credential": FULL_KEY})
        assert login.status == 403  # the sign-in form has its own token
        await sign_in(page, api.base, FULL_KEY)
        target = api.base + "/console/subscriptions/crm/disable"
        missing = await page.request.post(target, form={"version": "1", "reason": "no token"})
        assert missing.status == 403 and "CSRF" in await missing.text()
        wrong = await page.request.post(target, form={"csrf_token": "x" * 43, "version": "1"})
        assert wrong.status == 403
        other_site = await page.request.post(
            target,
            form={"csrf_token": await csrf_of(page), "version": "1"},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert other_site.status == 403
        status, _, sub = await api.call("GET", "/v1/subscriptions/crm")
        assert sub["enabled"] is True and sub["version"] == 1  # nothing ran

        ok = await page.request.post(target, form={"csrf_token": await csrf_of(page), "version": "1"})
        assert ok.status == 200  # the same request with the token does run
        status, _, sub = await api.call("GET", "/v1/subscriptions/crm")
        assert status == 200 and sub["enabled"] is False


async def test_no_request_leaves_for_another_host_and_the_csp_holds(bootstrap: str, unique: str) -> None:
    settings = await _setup(bootstrap, unique)
    write_attempts(settings, retried_once("evt_1", "crm", int(time.time() * 1000)))
    async with running_console(settings) as api, chromium() as browser:
        await indexed(api, 2)
        page = await browser.page()
        await sign_in(page, api.base, FULL_KEY)
        pages = [
            "/console/",
            "/console/?q=cr&sort=volume&dir=desc",
            "/console/subscriptions/crm",
            "/console/subscriptions/crm?failures=1",
            "/console/events?id=evt_1",
            "/console/dead-letters",
            "/console/replays",
        ]
        for path in pages:
            response = await page.goto(api.base + path)
            assert response is not None and response.status == 200, path
            headers = await response.all_headers()
            assert headers["content-security-policy"].startswith("default-src 'self'"), path
            assert headers["cache-control"] == "no-store"
            await page.wait_for_load_state("networkidle")
            inline = await page.evaluate(INLINE)
            assert inline == 0, path
        await page.goto(api.base + "/console/")
        await page.fill("#q", "crm")  # htmx search: a request of its own
        await page.wait_for_url(lambda url: "q=crm" in url)
        await page.click("#subscriptions a:has-text('crm')")
        await page.click("#failures-only")
        await page.wait_for_selector("tr.attempt[data-outcome=retry]")
    assert len(browser.requests) >= len(pages) * 3  # pages and their assets, all recorded
    assert foreign(browser.requests, api.base) == []
    assert not [e for e in browser.console_errors if "Content Security Policy" in e], browser.console_errors
