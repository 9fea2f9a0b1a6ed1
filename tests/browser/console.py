"""Helpers for the browser tests: Debian's Chromium driven by Playwright, the API (with its console
and its delivery-history index) running in this event loop, signing in as a person
does, and a record of every request a page made.

The browser is ``/usr/bin/chromium`` (``scripts/browser-setup`` installs it); Playwright's own browser
downloads are never used. Without it the tests skip, and fail under ``CI``. One Chromium serves the
whole session (started on first use, stopped at exit); each test gets a fresh context of its own (its
own cookies, storage and cache), connected over the DevTools protocol on loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Request, async_playwright

from fanout.api.context import API
from fanout.config import Settings
from fanout.history.store import HistoryStore
from tests.integration.api import Client, running_api

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
    "--hide-scrollbars",  # as Playwright's own headless launch: pages and screenshots use the whole width
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


START_TIMEOUT = 60.0


@dataclass
class _Shared:
    proc: subprocess.Popen[bytes]
    profile: str
    port: int


_shared: _Shared | None = None


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.proc.terminate()
        try:
            _shared.proc.wait(10)
        except subprocess.TimeoutExpired:
            _shared.proc.kill()
            _shared.proc.wait(10)
        shutil.rmtree(_shared.profile, ignore_errors=True)
        _shared = None


def shared_chromium() -> int:
    """The DevTools port of this session's Chromium, started on first use (stopped at exit)."""
    global _shared
    need_chromium()
    if _shared is not None and _shared.proc.poll() is None:
        return _shared.port
    _stop_shared()
    profile = tempfile.mkdtemp(prefix="fanout-chromium-")
    proc = subprocess.Popen(
        [
            str(CHROMIUM),
            *CHROMIUM_ARGS,
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    active = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while not (active.is_file() and active.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"Chromium did not open its DevTools port within {START_TIMEOUT:g}s")
        time.sleep(0.05)  # polling a file Chromium writes once, with a deadline
    _shared = _Shared(proc, profile, int(active.read_text().split()[0]))
    atexit.unregister(_stop_shared)
    atexit.register(_stop_shared)
    return _shared.port


@contextlib.asynccontextmanager
async def chromium(width: int = 1280, height: int = 900) -> AsyncIterator[Browser]:
    """A fresh browser context (cookies, storage, cache of its own) in the session's Chromium."""
    port = shared_chromium()
    async with async_playwright() as playwright:
        connected = await playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
        context = await connected.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        browser = Browser(context)

        def record(request: Request) -> None:
            browser.requests.append(request.url)

        context.on("request", record)
        try:
            yield browser
        finally:
            await context.close()
            await connected.close()  # disconnects; the shared Chromium keeps running


@contextlib.asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[Client]:
    """The API, console included, on 127.0.0.1 (a free port), as ``fanout api`` runs it: it indexes
    the attempts topic into its own history index (in a directory of its own) and the console's
    history pages read that index (``history_of``)."""
    async with running_api(settings) as client:
        yield client


def history_of(api: Client) -> HistoryStore:
    """The history index the running API keeps (and its console reads)."""
    history = api.app[API].history
    assert history is not None
    return history.store


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
