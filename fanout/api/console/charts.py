"""Charts drawn on the server as inline SVG: no script, no image request, nothing for the CSP to allow.

Each chart is a row of stacked bars (delivered, failed) per bucket, with a text equivalent: the SVG
has ``role="img"`` and an ``aria-label`` that reads the numbers, and the 24-hour chart is followed by
a table of the same data on the page. Only numbers and escaped text reach the markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from fanout.api.console.history import Bucket

DELIVERED = "#1a7f37"
FAILED = "#c62828"
AXIS = "#57606a"


def _bars(series: Sequence[Bucket], width: float, height: float, gap: float) -> list[str]:
    top = max((b.total for b in series), default=0)
    if not series:
        return []
    step = width / len(series)
    bar = max(step - gap, 1.0)
    shapes = []
    for i, b in enumerate(series):
        if top == 0 or b.total == 0:
            continue
        x = round(i * step, 2)
        ok_h = round(height * b.delivered / top, 2)
        bad_h = round(height * b.failed / top, 2)
        if ok_h:
            shapes.append(
                f'<rect class="ok" x="{x}" y="{round(height - ok_h, 2)}" width="{round(bar, 2)}" '
                f'height="{ok_h}" fill="{DELIVERED}"/>'
            )
        if bad_h:
            shapes.append(
                f'<rect class="bad" x="{x}" y="{round(height - ok_h - bad_h, 2)}" width="{round(bar, 2)}" '
                f'height="{bad_h}" fill="{FAILED}"/>'
            )
    return shapes


def spark_label(series: Sequence[Bucket]) -> str:
    delivered = ", ".join(str(b.delivered) for b in series)
    failed = ", ".join(str(b.failed) for b in series)
    return f"Delivered per interval: {delivered}. Failed per interval: {failed}."


def sparkline(series: Sequence[Bucket], width: int = 96, height: int = 24) -> Markup:
    """A small bar chart of the series (oldest left), for a table cell."""
    if not series or all(b.total == 0 for b in series):
        return Markup('<span class="muted">no attempts</span>')
    shapes = "".join(_bars(series, width, height, 1))
    label = escape(spark_label(series))
    return Markup(
        f'<svg class="spark" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{shapes}</svg>'
    )


def _hour(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:%M")


def health_chart(series: Sequence[Bucket], width: int = 720, height: int = 180) -> Markup:
    """The subscription page's chart: bars per bucket with a y scale and time labels (UTC)."""
    left, bottom, plot_h = 40, 20, height - 28
    plot_w = width - left - 4
    top = max((b.total for b in series), default=0)
    shapes = "".join(_bars(series, plot_w, plot_h, 2))
    parts = [
        f'<line x1="{left}" y1="{8 + plot_h}" x2="{width - 4}" y2="{8 + plot_h}" stroke="{AXIS}"/>',
        f'<text x="{left - 6}" y="16" text-anchor="end" fill="{AXIS}">{top}</text>',
        f'<text x="{left - 6}" y="{8 + plot_h}" text-anchor="end" fill="{AXIS}">0</text>',
        f'<g transform="translate({left},8)">{shapes}</g>',
    ]
    if series:
        step = plot_w / len(series)
        every = max(1, len(series) // 6)
        for i in range(0, len(series), every):
            x = round(left + i * step, 2)
            hour = escape(_hour(series[i].start))
            parts.append(f'<text x="{x}" y="{height - bottom + 16}" fill="{AXIS}">{hour}</text>')
    total = sum(b.total for b in series)
    failed = sum(b.failed for b in series)
    label = escape(
        f"Attempts per hour over 24 hours: {total} in all, {failed} failed; the highest hour had {top}."
    )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )
