#!/usr/bin/env python3
"""Check that aiohttp's HTTP *client* is used only in fanout/http (run by ``make lint``).

import-linter can forbid a whole external package, but fanout/api and the probes legitimately use
aiohttp's server (``aiohttp.web``), so this check reads every module's syntax tree instead and refuses,
outside the allowed packages:

- importing the client modules: ``aiohttp.client``, ``aiohttp.connector``, ``aiohttp.client_reqrep``,
  ``aiohttp.client_ws``, ``aiohttp.client_proto``, ``aiohttp.tracing`` (``import``, ``from ... import``);
- importing a client name from ``aiohttp`` (``ClientSession``, ``TCPConnector``, the ``request``
  helper, ...; see CLIENT_NAMES);
- reaching one through the module: ``aiohttp.ClientSession(...)``, ``import aiohttp as a;
  a.TCPConnector()``, ``aiohttp.client.request(...)``.

    scripts/check_http_clients.py                     check ./fanout, allowing fanout.http
    scripts/check_http_clients.py --root DIR --package NAME --allow NAME.http

Exit 0 when clean; 1 with one ``path:line: ...`` line per use found.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

CLIENT_MODULES = frozenset({"client", "connector", "client_reqrep", "client_ws", "client_proto", "tracing"})
CLIENT_NAMES = frozenset(
    {
        "ClientSession",
        "ClientTimeout",
        "ClientRequest",
        "ClientResponse",
        "TCPConnector",
        "UnixConnector",
        "NamedPipeConnector",
        "BaseConnector",
        "TraceConfig",
        "request",
        *CLIENT_MODULES,
    }
)


def _is_client_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return len(parts) >= 2 and parts[0] == "aiohttp" and parts[1] in CLIENT_MODULES


def _attribute_chain(node: ast.expr) -> list[str] | None:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(names)]
    return None


def uses(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, what) for every use of aiohttp's client in ``tree``."""
    aliases: set[str] = set()  # names bound to the aiohttp module itself
    inner: set[int] = set()  # attribute nodes that are part of a longer chain
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_client_module(alias.name):
                    yield node.lineno, f"import {alias.name}"
                elif alias.name == "aiohttp":
                    aliases.add(alias.asname or "aiohttp")
                elif alias.name.startswith("aiohttp.") and alias.asname is None:
                    aliases.add("aiohttp")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_client_module(node.module):
                yield node.lineno, f"from {node.module} import ..."
            elif node.module == "aiohttp":
                for alias in node.names:
                    if alias.name in CLIENT_NAMES or alias.name == "*":
                        yield node.lineno, f"from aiohttp import {alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _attribute_chain(node)
            if chain and chain[0] in aliases and len(chain) >= 2 and chain[1] in CLIENT_NAMES:
                yield node.lineno, ".".join(["aiohttp", *chain[1:]])


def _package_dir(root: Path, dotted: str) -> Path:
    return root.joinpath(*dotted.split("."))


def violations(root: Path, package: str, allowed: list[str]) -> list[str]:
    """``path:line: ...`` for every use of aiohttp's client in ``package`` (under ``root``) outside the
    ``allowed`` packages."""
    allowed_dirs = [_package_dir(root, name) for name in allowed]
    found: list[str] = []
    for path in sorted(_package_dir(root, package).rglob("*.py")):
        if any(path.is_relative_to(d) for d in allowed_dirs):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, what in sorted(set(uses(tree))):
            found.append(
                f"{path.relative_to(root)}:{line}: {what} (aiohttp's client belongs in {allowed[0]})"
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--package", default="fanout")
    parser.add_argument("--allow", action="append", help="a package that may use the client (repeatable)")
    args = parser.parse_args()
    allowed = args.allow or [f"{args.package}.http"]
    found = violations(args.root, args.package, allowed)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} use(s) of aiohttp's client outside {', '.join(allowed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
