"""The documentation stays true to the code.

- docs/configuration.md and docs/cli.md are what scripts/gen_docs.py makes of the code now (else:
  `make docs`), every setting has a description and a row;
- every relative link and anchor in README.md and docs/ (and the other READMEs) resolves;
- the commands, options, settings and Python names the hand-written pages mention exist;
- the performance page shows the published benchmark run.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel, ConfigDict

from fanout.cli import main as cli_main
from fanout.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(p for p in ROOT.glob("*/README.md") if p.parts[-2][0] != "."),
    ]
)
GENERATED = {ROOT / "docs" / "configuration.md", ROOT / "docs" / "cli.md"}
HAND_WRITTEN = [p for p in PAGES if p not in GENERATED]


@cache
def gen_docs() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- generated pages ----------------------------------------------------------------------------------


def test_the_generated_pages_match_the_code() -> None:
    stale = gen_docs().stale_pages()
    assert not stale, f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}: run `make docs`"


def test_the_check_finds_a_page_that_drifted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = gen_docs()
    page = tmp_path / "configuration.md"
    page.write_text(module.CONFIG_PAGE.read_text().replace("`127.0.0.1:9092`", "`localhost:9092`"))
    monkeypatch.setattr(module, "CONFIG_PAGE", page)
    assert module.stale_pages() == [page]


def test_gen_docs_check_exits_0_on_this_tree() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_a_setting_without_a_description_is_refused() -> None:
    class Section(BaseModel):
        model_config = ConfigDict(use_attribute_docstrings=True)

        described: int = 1
        """Has one."""
        bare: int = 2

    module = gen_docs()
    with pytest.raises(module.MissingDescription, match=r"section\.bare"):
        list(module._rows(Section, "section", "FANOUT_SECTION"))


def _settings(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        nested = _model_of(field.annotation)
        if nested is not None and prefix == "":
            yield from _settings(nested, path)
        else:
            yield path


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def test_every_setting_has_a_row_with_a_description() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \|(.*)\|$", page, re.M)}
    missing = [path for path in _settings(Settings, "") if path not in rows]
    assert not missing, f"settings without a row: {missing}"
    empty = [path for path, row in rows.items() if not row.rsplit("|", 1)[-1].strip()]
    assert not empty, f"rows without a description: {empty}"


# -- links --------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(])*?\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def _links(page: Path) -> Iterator[str]:
    yield from LINK.findall(_prose(page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no such anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_link_check_catches_a_broken_link_and_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A `code` title\n\n## Two words\n\n[ok](#two-words) [ok](#a-code-title)\n")
    assert anchors(page) == {"a-code-title", "two-words"}
    assert list(_links(page)) == ["#two-words", "#a-code-title"]
    page.write_text("[x](missing.md) `[not](a-link)`\n\n```\n[not](a-link)\n```\n")
    assert list(_links(page)) == ["missing.md"]


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail to docs/"


# -- what the hand-written pages name exists ----------------------------------------------------------


def _command_lines(text: str) -> Iterator[str]:
    yield from re.findall(r"`(fanout [^`]+)`", FENCE.sub("", text))
    for block in FENCE.findall(text):
        if block.startswith("```text"):
            continue  # a program's output, not commands
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("fanout "):
                yield line


def _check_command(line: str) -> str | None:
    """None when every command and option of ``fanout ...`` exists, else what is wrong."""
    command: click.Command = cli_main
    tokens = line.split()[1:]
    for raw in tokens:
        token = raw.strip("[],")
        if token.startswith("-"):
            option = token.split("=")[0]
            with click.Context(command) as ctx:
                known = {o for p in command.get_params(ctx) for o in [*p.opts, *p.secondary_opts]}
            if option not in known:
                return f"{line}: no option {option} on {command.name}"
            continue
        if isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", token):
            sub = command.commands.get(token)
            if sub is None:
                return f"{line}: no command {token}"
            command = sub
            continue
        if isinstance(command, click.Group) and command is cli_main:
            return None  # a placeholder (`fanout <its arguments>`)
    return None


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_named_exist(page: Path) -> None:
    wrong = [w for line in _command_lines(page.read_text()) if (w := _check_command(line))]
    assert not wrong, wrong


def test_the_command_check_catches_a_wrong_command() -> None:
    assert _check_command("fanout subscriptions apply -f routes.yaml --prune") is None
    assert _check_command("fanout run --config f.yaml --workers 2") is None
    assert _check_command("fanout subscriptions aply -f x") is not None
    assert _check_command("fanout dlq list --since 1h --all") is not None


SECTIONS = "|".join(Settings.model_fields)
SETTING = re.compile(rf"`((?:{SECTIONS})\.[a-z_]+(?:\.[a-z_]+)*)")


def _setting_exists(path: str) -> bool:
    model: type[BaseModel] | None = Settings
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
        if model is None:  # list[Model], dict[str, Model]: the item model
            for arg in typing.get_args(annotation):
                model = model or _model_of(arg)
    return True


@pytest.mark.parametrize(
    "page",
    [p for p in HAND_WRITTEN if p.name != "deploy.md"],  # deploy.md also names Helm values
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_settings_named_exist(page: Path) -> None:
    unknown = sorted({s for s in SETTING.findall(page.read_text()) if not _setting_exists(s)})
    assert not unknown, f"{page.relative_to(ROOT)} names settings that do not exist: {unknown}"


# fanout.<name>.<...> in backticks is a Python name, except these namespaces of topics, operational
# events, span attributes and jobs.
NOT_PYTHON = {"subscriptions", "subscription", "retry", "dlq", "ops", "attempts", "delivery", "event", "job"}
PYTHON_NAME = re.compile(r"`(fanout\.([a-z_]+)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def _python_name_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", HAND_WRITTEN, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_names_exist(page: Path) -> None:
    names = [name for name, first in PYTHON_NAME.findall(page.read_text()) if first not in NOT_PYTHON]
    unknown = [name for name in names if not _python_name_exists(name)]
    assert not unknown, f"{page.relative_to(ROOT)} names what does not exist: {unknown}"


def test_the_python_name_check_catches_a_moved_module() -> None:
    assert _python_name_exists("fanout.kafka.publisher.Publisher")
    assert not _python_name_exists("fanout.client.Publisher")
    assert not _python_name_exists("fanout.kafka.publisher.Nothing")


def test_the_performance_page_shows_the_published_run() -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    published = (ROOT / "bench-results" / "published" / "bench.txt").read_text()
    block = re.search(r"```\n(scenario .*?)```", page, re.S)
    assert block is not None
    assert block.group(1).strip() in published
    assert (ROOT / "bench-results" / "published" / "bench.png").exists()
