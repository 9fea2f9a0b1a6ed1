"""CPU cost of the CEL libraries on PyPI for fanout's filters and transforms.

For each library importable here it prints, in CPU microseconds (``time.process_time``, the best of
``--repeat`` rounds): compiling each expression, binding one event's variables (done once per event
and shared by every candidate subscription), and evaluating each expression against a bound event.
The event is a typical order (about 1 KB of JSON); ``--items N`` adds N line items to it, to show how
binding scales with the payload.

Libraries: ``cel_expr_python`` (cel-expr-python, the CEL project's wrapper of cel-cpp: fanout uses it),
``cel`` (common-expression-language, Rust cel-interpreter via PyO3) and ``celpy`` (cel-python, pure
Python). Install the alternatives with ``pip install common-expression-language cel-python``; a library
that is not installed is skipped. ``--json`` prints one JSON document instead of the table.

    .venv/bin/python scripts/bench_cel.py [--items 200] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

FILTERS = {
    "and": 'data.amount > 1000 && data.currency == "EUR"',
    "in": 'data.region in ["eu", "us"]',
    "has": "has(data.x)",
    "timestamp": 'timestamp(event.time) > timestamp("2026-01-01T00:00:00Z")',
}
TRANSFORM = '{"type": event.type, "payload": {"amount": data.amount, "customer": data.customer.id}}'


def sample_event(items: int) -> dict[str, Any]:
    data = {
        "amount": 1500,
        "currency": "EUR",
        "region": "eu",
        "customer": {"id": "c-42", "name": "Ada", "tier": "gold", "email": "ada@example.com"},
        "items": [{"sku": f"sku-{i}", "qty": i % 5 + 1, "price": 9.5} for i in range(items)],
        "note": "x" * 600,
    }
    event = {"id": "evt-1", "type": "order.created", "source": "shop", "time": "2026-03-01T12:00:00Z"}
    return {"event": {**event, "attributes": {"tenant": "t1"}}, "data": data, "headers": {}, "key": "k"}


class Library:
    name = ""
    module = ""

    def compile(self, source: str) -> Any:
        raise NotImplementedError

    def bind(self, variables: dict[str, Any]) -> Any:
        raise NotImplementedError

    def evaluate(self, program: Any, bound: Any) -> Any:
        raise NotImplementedError


class CelExprPython(Library):
    name = "cel-expr-python 0.1 (cel-cpp)"
    module = "cel_expr_python"

    def __init__(self) -> None:
        from cel_expr_python import cel

        t = cel.Type
        self.env = cel.NewEnv(
            variables={
                "event": t.Map(t.STRING, t.DYN),
                "data": t.DYN,
                "headers": t.Map(t.STRING, t.STRING),
                "key": t.STRING,
            }
        )

    def compile(self, source: str) -> Any:
        return self.env.compile(source)

    def bind(self, variables: dict[str, Any]) -> Any:
        return self.env.Activation(variables)

    def evaluate(self, program: Any, bound: Any) -> Any:
        return program.eval(bound).plain_value()


class CommonExpressionLanguage(Library):
    name = "common-expression-language (Rust)"
    module = "cel"

    def __init__(self) -> None:
        import cel

        self.cel = cel

    def compile(self, source: str) -> Any:
        return self.cel.compile(source)

    def bind(self, variables: dict[str, Any]) -> Any:
        return self.cel.Context(variables=variables)

    def evaluate(self, program: Any, bound: Any) -> Any:
        return program.execute(bound)


class CelPython(Library):
    name = "cel-python (pure Python)"
    module = "celpy"

    def __init__(self) -> None:
        import celpy

        self.celpy = celpy
        self.env = celpy.Environment()

    def compile(self, source: str) -> Any:
        return self.env.program(self.env.compile(source))

    def bind(self, variables: dict[str, Any]) -> Any:
        return {name: self.celpy.json_to_cel(value) for name, value in variables.items()}

    def evaluate(self, program: Any, bound: Any) -> Any:
        return program.evaluate(bound)


def cpu_us(action: Callable[[], object], rounds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            action()
        best = min(best, (time.process_time() - start) / rounds)
    return best * 1e6


def measure(lib: Library, items: int, repeat: int) -> dict[str, Any]:
    variables = sample_event(items)
    bound = lib.bind(variables)
    slow = lib.module == "celpy"
    out: dict[str, Any] = {"library": lib.name, "compile_us": {}, "evaluate_us": {}}
    for name, source in {**FILTERS, "transform": TRANSFORM}.items():
        program = lib.compile(source)
        result = lib.evaluate(program, bound)
        if name != "transform" and result is not True and bool(result) is not (name != "has"):
            raise SystemExit(f"{lib.name}: {name} gave {result!r}")
        out["compile_us"][name] = round(
            cpu_us(lambda s=source: lib.compile(s), 20 if slow else 200, repeat), 1
        )
        out["evaluate_us"][name] = round(
            cpu_us(lambda p=program: lib.evaluate(p, bound), 200 if slow else 5000, repeat), 2
        )
    out["bind_us"] = round(cpu_us(lambda: lib.bind(variables), 50 if slow else 1000, repeat), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=20, help="line items in the sample payload")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for cls in (CelExprPython, CommonExpressionLanguage, CelPython):
        if importlib.util.find_spec(cls.module) is None:
            print(f"skipped {cls.name}: {cls.module} is not installed", file=sys.stderr)
            continue
        results.append(measure(cls(), args.items, args.repeat))
    if args.json:
        sys.stdout.write(orjson.dumps({"items": args.items, "results": results}).decode() + "\n")
        return
    names = [*FILTERS, "transform"]
    print(f"CPU µs (best of {args.repeat}); payload with {args.items} line items")
    print(f"{'library':36} {'bind':>8} " + " ".join(f"{n + ' eval':>14}" for n in names))
    for r in results:
        evals = " ".join(f"{r['evaluate_us'][n]:>14}" for n in names)
        print(f"{r['library']:36} {r['bind_us']:>8} {evals}")
    print(f"{'library':36} " + " ".join(f"{n + ' compile':>17}" for n in names))
    for r in results:
        print(f"{r['library']:36} " + " ".join(f"{r['compile_us'][n]:>17}" for n in names))


if __name__ == "__main__":
    main()
