"""The benchmark's outputs: a table on stdout, JSON in bench-results/, a PNG chart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

TARGETS = """\
targets: (a) 1 worker >= 0.8x ceiling/s | 2 workers <= 1.1x the CPU per delivery of 1 | (b) >= 0.8x ceiling/s
         (c) within 10% of (a), each worker < 250 MiB | p99 < 50 ms at 50% load | (d) drop <= the failing share"""


def table(report: Any) -> str:
    c = report.ceiling
    lines = [
        f"machine: {report.machine}",
        f"cores: {report.cores}",
        f"sink (nginx, 1 worker) alone, measured with wrk at {64} connections: {report.sink_capacity:,.0f} requests/s",
        f"ceiling (aiohttp + uvloop, 64 in flight, no Kafka): {c['per_second']:,.0f} requests/s, "
        f"{c['cpu_per_1000']:.3f} CPU-s per 1000",
        "",
        f"{'scenario':<44}{'workers':>8}{'deliv/s':>10}{'x ceil':>8}{'CPU-s/1k':>10}{'x ceil':>8}{'peak RSS':>10}",
    ]
    titles = {
        "a": "(a) one subscription",
        "b": "(b) fan-out x10",
        "c": "(c) 10,000 subscriptions, 1 match",
        "d": "(d) 5% answered 500 (successes)",
    }
    for r in report.runs:
        lines.append(
            f"{titles.get(r.scenario, r.scenario):<44}{r.workers:>8}{r.per_second:>10,.0f}{r.ratio_throughput:>8.2f}"
            f"{r.cpu_per_1000:>10.3f}{r.ratio_cpu:>8.2f}{r.peak_rss_mib:>8.0f}MiB"
        )
    if report.latency:
        lat = report.latency
        lines += [
            "",
            f"latency, produce to receipt, at {lat['offered_per_second']:,.0f} events/s (50% of (a)'s maximum), "
            f"{lat['samples']:,} samples: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms",
        ]
    one = {r.scenario: r for r in report.runs if r.workers == 1}
    two = {r.scenario: r for r in report.runs if r.workers == 2}
    if "a" in one and "a" in two:
        lines.append(
            f"2 workers / 1 worker, CPU per delivery in (a): {two['a'].cpu_per_1000 / one['a'].cpu_per_1000:.2f}"
        )
    if "a" in one and "c" in one:
        lines.append(f"(c) / (a) throughput, 1 worker: {one['c'].per_second / one['a'].per_second:.2f}")
    if "a" in one and "d" in one:
        lines.append(
            f"(d) / (a) successful throughput, 1 worker: {one['d'].per_second / one['a'].per_second:.2f}"
        )
    lines += ["", TARGETS, f"total time: {report.machine.get('seconds', 0):.0f} s"]
    return "\n".join(lines)


def chart(report: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"({r.scenario}) {r.workers}w" for r in report.runs]
    values = [r.per_second for r in report.runs]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(labels, values, color=["#4c78a8" if r.workers == 1 else "#72b7b2" for r in report.runs])
    ceiling = report.ceiling["per_second"]
    ax.axhline(ceiling, color="#e45756", linestyle="--", label=f"ceiling {ceiling:,.0f}/s")
    ax.axhline(0.8 * ceiling, color="#f58518", linestyle=":", label="0.8 x ceiling")
    ax.set_ylabel("successful deliveries / s")
    ax.set_title("fanout dispatcher vs plain aiohttp client (same machine, same sink)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: Any, results: Path, asdict: Callable[[Any], dict[str, Any]]) -> None:
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = table(report)
    print("\n" + text)
    data = orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2)
    (results / f"bench-{stamp}.json").write_bytes(data)
    (results / "latest.json").write_bytes(data)
    (results / "latest.txt").write_text(text + "\n")
    chart(report, results / f"bench-{stamp}.png")
    chart(report, results / "latest.png")
    print(f"\nwrote {results}/bench-{stamp}.json and .png (and latest.*)")
