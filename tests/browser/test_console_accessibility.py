"""Accessibility basics of every console page, in a real Chromium at 1280 and 390 pixels wide: no
page scrolls sideways, every form control has a label, text contrast meets WCAG AA (4.5:1, or 3:1
for large text), and every control can be reached with the Tab key."""

from __future__ import annotations

import time

import pytest

from tests.browser.console import chromium, running_console, sign_in
from tests.browser.history import indexed, retried_once, write_attempts
from tests.integration.api import FULL_KEY, api_settings, create_api_topics, source_topic
from tests.integration.engine import apply, subscription

PAGES = (
    "/console/",
    "/console/subscriptions/crm",
    "/console/events?id=evt_1",
    "/console/dead-letters",
    "/console/replays",
)

UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.outerHTML.slice(0, 120))"""

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
WIDER = """() => [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
  .map(el => el.tagName + '.' + el.className).slice(0, 5)"""

LOW_CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || style.visibility === 'hidden' || el.getClientRects().length === 0) continue;
    const r = el.getBoundingClientRect();
    if (r.right < 0 || r.bottom < 0) continue;  // the skip link, off-screen until focused
    const fg = rgb(style.color).slice(0, 3), bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < need) bad.push(`${el.tagName}.${el.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return bad;
}"""

CONTROLS = """() => [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]')]
  .filter(el => el.checkVisibility() && !el.disabled && el.tabIndex >= 0)
  .map(el => el.id || el.getAttribute('href') || el.name || el.outerHTML.slice(0, 60))"""

FOCUSED = """() => { const el = document.activeElement;
  return el ? (el.id || el.getAttribute('href') || el.name || el.outerHTML.slice(0, 60)) : null; }"""


@pytest.mark.parametrize("width", [1280, 390])
async def test_every_page_is_labelled_readable_reachable_and_fits(
    bootstrap: str, unique: str, width: int
) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    await apply(settings, [subscription("crm", "http://127.0.0.1:9/hook", [source_topic(settings)])])
    write_attempts(settings, retried_once("evt_1", "crm", int(time.time() * 1000)))
    async with running_console(settings) as api, chromium(width=width, height=800) as browser:
        await indexed(api, 2)
        page = await browser.page()
        await page.goto(api.base + "/console/login")
        assert await page.evaluate(UNLABELLED) == []
        assert await page.evaluate(LOW_CONTRAST) == []
        await sign_in(page, api.base, FULL_KEY)
        for path in PAGES:
            await page.goto(api.base + path)
            wide = await page.evaluate(WIDER)
            assert await page.evaluate(OVERFLOW) <= 0, f"{path} scrolls sideways at {width}px: {wide}"
            assert await page.evaluate(UNLABELLED) == [], path
            assert await page.evaluate(LOW_CONTRAST) == [], path
            wanted = set(await page.evaluate(CONTROLS))
            reached = set()
            await page.locator("body").focus()
            for _ in range(4 * len(wanted) + 20):  # a date-time input takes a Tab per part
                await page.keyboard.press("Tab")
                reached.add(await page.evaluate(FOCUSED))
                if wanted <= reached:
                    break
            assert wanted <= reached, f"{path}: not reachable by Tab: {wanted - reached}"
