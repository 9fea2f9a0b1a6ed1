"""scripts/demo.py reads the receiver's output line by line with a deadline; lines that arrive together
must all be seen (issue 13, defect 10: it reported "1/4 delivered" when all four had arrived)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fanout_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Listener:
    """Stands in for the ``fanout listen`` process: ``stdout`` is the read end of a real pipe."""

    def __init__(self) -> None:
        read, self.write = os.pipe()
        self.stdout = os.fdopen(read, "rb")


@pytest.fixture
def listener() -> Iterator[Listener]:
    pipe = Listener()
    yield pipe
    pipe.stdout.close()
    os.close(pipe.write)


def record(i: int, prefix: str = "demo-run-") -> dict[str, Any]:
    return {"id": f"{prefix}{i}", "type": "t", "verified": True, "data": {"i": i}}


def test_lines_that_arrive_in_one_write_are_all_read(demo: ModuleType, listener: Listener) -> None:
    lines = b"".join(orjson.dumps(record(i)) + b"\n" for i in range(4))
    os.write(listener.write, lines)  # all four at once; the writer stays open (no end of file)
    started = time.monotonic()
    got = demo._read_deliveries(listener, "demo-run-", 4, 5)
    assert [r["id"] for r in got] == [f"demo-run-{i}" for i in range(4)]
    assert time.monotonic() - started < 4, "read at once, not at the deadline"


def test_other_runs_partial_lines_and_the_deadline(demo: ModuleType, listener: Listener) -> None:
    other = orjson.dumps(record(0, "demo-old-")) + b"\n"
    first = orjson.dumps(record(0)) + b"\n"
    second = orjson.dumps(record(1))
    os.write(listener.write, other + first + second[:7])  # the second line is still incomplete
    reader = demo.LineReader(listener.stdout.fileno())
    deadline = time.monotonic() + 5
    assert reader.readline(deadline) == other.rstrip(b"\n")
    assert reader.readline(deadline) == first.rstrip(b"\n")
    assert reader.readline(time.monotonic() + 0.2) is None, "an incomplete line waits"
    os.write(listener.write, second[7:] + b"\n")
    assert reader.readline(deadline) == second
    assert reader.readline(time.monotonic() + 0.2) is None, "nothing more: the deadline"


def test_the_end_of_the_output_ends_the_read(demo: ModuleType) -> None:
    proc = subprocess.Popen(["printf", '{"id": "demo-run-0"}\\n'], stdout=subprocess.PIPE)
    got = demo._read_deliveries(proc, "demo-run-", 4, 30)
    proc.wait(10)
    assert [r["id"] for r in got] == ["demo-run-0"]
