"""Helpers for the browser tests: Debian's Chromium driven by Playwright, the API (with its console)
running in this event loop, signing in as a person does, and a record of every request a page made.

The browser is ``/usr/bin/chromium`` (``scripts/browser-setup`` installs it); Playwright's own browser
downloads are never used. Without it the tests skip, and fail under ``CI``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import BrowserContext, Page, Request, async_playwright

from fanout.api.app import build_app
from fanout.api.app import runner as api_runner
from fanout.api.console import HISTORY, HistoryQueries
from fanout.config import Settings
from tests.integration.api import Client

CHROMIUM = Path(os.environ.get("FANOUT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ACTION_TIMEOUT_MS = 30_000


def need_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = f"no Chromium at {CHROMIUM}; run scripts/browser-setup (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass
class Browser:
    """A fresh Chromium profile; ``requests`` lists the URL of every request any of its pages made."""

    context: BrowserContext
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def page(self) -> Page:
        page = self.context.pages[0] if self.context.pages else await self.context.new_page()
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        return page


@contextlib.asynccontextmanager
async def chromium(width: int = 1280, height: int = 900) -> AsyncIterator[Browser]:
    need_chromium()
    with tempfile.TemporaryDirectory(prefix="fanout-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            browser = Browser(context)

            def record(request: Request) -> None:
                browser.requests.append(request.url)

            context.on("request", record)
            try:
                yield browser
            finally:
                await context.close()


@contextlib.asynccontextmanager
async def running_console(settings: Settings, history: HistoryQueries | None = None) -> AsyncIterator[Client]:
    """The API, console included, on 127.0.0.1 (a free port); ``history`` backs the history pages."""
    app = build_app(settings)
    if history is not None:
        app[HISTORY] = history
    runner = api_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(f"http://127.0.0.1:{port}", session, runner.app)
    finally:
        await runner.cleanup()


async def sign_in(page: Page, base: str, credential: str) -> None:
    await page.goto(base + "/console/")
    await page.fill("#credential", credential)
    await page.click("form button[type=submit]")
    await page.wait_for_selector("header .who")


def foreign(urls: list[str], base: str) -> list[str]:
    """The URLs that are not on ``base``'s host and port."""
    own = urlsplit(base).netloc
    return [u for u in urls if urlsplit(u).scheme not in ("data", "about") and urlsplit(u).netloc != own]


async def csrf_of(page: Page) -> str:
    token = await page.get_attribute("input[name=csrf_token]", "value")
    assert token
    return token


async def text_of(page: Page, selector: str) -> str:
    return (await page.inner_text(selector)).strip()
