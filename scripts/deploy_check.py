"""Static validation of the deployment files (no Docker engine, no cluster, no network but the registries).

0. NOTES.txt renders with each values file;
1. ``helm lint --strict`` of helm/fanout with the default values, ci/all-on-values.yaml (everything
   on) and ci/alternatives-values.yaml (HPA instead of KEDA, existing Secrets, no API);
2. ``helm template`` with each, for each Kubernetes version in deploy_tools.KUBERNETES_VERSIONS;
3. ``kubeconform -strict`` on every rendering, against offline Kubernetes and CRD schemas (a kind
   without a schema is an error, not a skip);
4. compose/docker-compose.yml against the Compose specification's JSON schema.

Tools and schemas come from scripts/deploy_tools.py (pinned, cached outside the clone). With
``--out DIR`` the renderings are kept there (``<values>-<kubernetes version>.yaml``) with a summary,
``result.json``, for tests/deploy to read. Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import deploy_tools  # scripts/ is on sys.path when this file runs as a script
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "fanout"
COMPOSE = ROOT / "compose" / "docker-compose.yml"
# "default": values.yaml alone; "all-on": every optional part; "alternatives": the other branches.
VALUES = {
    "default": None,
    "all-on": CHART / "ci" / "all-on-values.yaml",
    "alternatives": CHART / "ci" / "alternatives-values.yaml",
}
RELEASE = "fanout"
NAMESPACE = "fanout"


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    output: str = ""


@dataclass
class Result:
    checks: list[Check] = field(default_factory=list)
    renderings: dict[str, str] = field(default_factory=dict)  # "<values>-<k8s version>" -> file

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _run(result: Result, name: str, argv: list[str], stdout_to: Path | None = None) -> bool:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if stdout_to is not None and proc.returncode == 0:
        stdout_to.write_text(proc.stdout)
        output = proc.stderr
    else:
        output = proc.stdout + proc.stderr
    check = Check(name, proc.returncode == 0, time.monotonic() - started, output.strip())
    result.checks.append(check)
    print(f"{'ok  ' if check.ok else 'FAIL'} {name} ({check.seconds:.1f}s)", flush=True)
    if not check.ok or "--verbose" in sys.argv:
        print("     " + check.output.replace("\n", "\n     "), flush=True)
    return check.ok


def _values_args(values: Path | None) -> list[str]:
    return ["--values", str(values)] if values else []


def check_chart(tools: deploy_tools.Tools, out: Path, result: Result) -> None:
    oldest = deploy_tools.KUBERNETES_VERSIONS[0]
    for label, values in VALUES.items():
        _run(
            result,
            f"helm lint --strict ({label} values)",
            [
                str(tools.helm),
                "lint",
                "--strict",
                "--kube-version",
                oldest,
                str(CHART),
                *_values_args(values),
            ],
        )
    check_notes(tools, out, result)
    location = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
    for k8s, schemas in tools.k8s_schemas.items():
        rendered = []
        for label, values in VALUES.items():
            path = out / f"{label}-{k8s}.yaml"
            argv = [str(tools.helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
            argv += ["--kube-version", k8s, *_values_args(values)]
            if _run(result, f"helm template ({label} values, Kubernetes {k8s})", argv, path):
                result.renderings[f"{label}-{k8s}"] = str(path)
                rendered.append(path)
        # One kubeconform process per Kubernetes version: it compiles each schema once for all files.
        labels = ", ".join(p.stem.rsplit("-", 1)[0] for p in rendered)
        _run(
            result,
            f"kubeconform -strict (Kubernetes {k8s}: {labels})",
            [
                str(tools.kubeconform),
                "-strict",
                "-summary",
                "-schema-location",
                f"{schemas}/{location}",
                "-schema-location",
                f"{tools.crd_schemas}/{location}",
                *map(str, rendered),
            ],
        )


def check_notes(tools: deploy_tools.Tools, out: Path, result: Result) -> None:
    """NOTES.txt renders with every values file (helm lint reports a failing NOTES.txt only as INFO).

    ``helm template`` never prints NOTES.txt, so it is rendered from a copy of the chart in which it is
    the block scalar of an ordinary template.
    """
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / CHART.name
        shutil.copytree(CHART, chart)
        notes = chart / "templates" / "NOTES.txt"
        body = "".join(f"  {line}" for line in notes.read_text().splitlines(keepends=True))
        (chart / "templates" / "zz-notes.yaml").write_text("notes: |\n" + body)
        notes.unlink()
        for label, values in VALUES.items():
            argv = [str(tools.helm), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
            argv += ["--kube-version", deploy_tools.KUBERNETES_VERSIONS[-1], *_values_args(values)]
            argv += ["--show-only", "templates/zz-notes.yaml"]
            _run(result, f"NOTES.txt renders ({label} values)", argv, out / f"notes-{label}.yaml")


def check_compose(tools: deploy_tools.Tools, result: Result) -> None:
    started = time.monotonic()
    schema = json.loads(tools.compose_schema.read_text())
    document = yaml.safe_load(COMPOSE.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: e.json_path)
    output = "\n".join(f"{e.json_path}: {e.message}" for e in errors)
    check = Check(
        "compose/docker-compose.yml against the Compose specification schema",
        not errors,
        time.monotonic() - started,
        output,
    )
    result.checks.append(check)
    print(f"{'ok  ' if check.ok else 'FAIL'} {check.name} ({check.seconds:.1f}s)", flush=True)
    if errors:
        print("     " + output.replace("\n", "\n     "), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="keep the renderings and result.json in this directory")
    parser.add_argument("--verbose", action="store_true", help="print every tool's output")
    args = parser.parse_args()
    started = time.monotonic()
    tools = deploy_tools.ensure()
    tools_seconds = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = Result()
        check_chart(tools, out, result)
        check_compose(tools, result)
        summary = {
            "ok": result.ok,
            "tools": tools.as_json(),
            "tools_seconds": round(tools_seconds, 2),
            "checks_seconds": round(time.monotonic() - started - tools_seconds, 2),
            "checks": [asdict(c) for c in result.checks],
            "renderings": result.renderings,
        }
        (out / "result.json").write_text(json.dumps(summary, indent=2))
    failed = [c.name for c in result.checks if not c.ok]
    verdict = f"{len(failed)} of {len(result.checks)} checks FAILED" if failed else "every check passed"
    print(f"deploy-check: {verdict} (tools {tools_seconds:.1f}s, checks {summary['checks_seconds']:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
