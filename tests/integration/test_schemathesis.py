"""schemathesis against the running API (a real ``fanout api`` process) with a valid key: no 5xx, every
status and content type documented, every response valid against its schema, and invalid requests
rejected. Bounded: ``FANOUT_SCHEMATHESIS_EXAMPLES`` examples per operation (default 20), a fixed seed
(``FANOUT_SCHEMATHESIS_SEED``) so a failure reproduces."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pydantic import SecretStr

from fanout.config import IngestSource
from tests.integration.api import FULL_KEY, api_settings, create_api_topics
from tests.integration.engine import ROOT, settings_env

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until ``/readyz`` answers 200 and the history index has read the attempts topic (until then the
    history routes answer 503, which schemathesis would rightly count as server errors)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fanout api exited during start"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200 and json.loads(response.read())["history"]["caught_up"]:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("fanout api did not become ready")


def test_schemathesis_finds_nothing(bootstrap: str, unique: str, tmp_path: Path) -> None:
    port = free_port()
    ingest = {
        "github": IngestSource(scheme="github", topic=f"{unique}.events", secrets=[SecretStr("s3cret")])
    }
    settings = api_settings(bootstrap, unique, host="127.0.0.1", port=port, test_timeout=2, ingest=ingest)
    create_api_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")} | settings_env(settings)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "fanout", "api"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, api)
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{url}/openapi.json",
                "--header",
                f"Authorization: Bearer {FULL_KEY}",
                "--checks",
                CHECKS,
                "--max-examples",
                os.environ.get("FANOUT_SCHEMATHESIS_EXAMPLES", "20"),
                "--seed",
                os.environ.get("FANOUT_SCHEMATHESIS_SEED", "20261128"),
                "--workers",
                "1",
                "--no-shrink",
                "--request-timeout",
                "30",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "passed" in run.stdout
    finally:
        api.send_signal(signal.SIGTERM)
        code = api.wait(60)
    server_log = log.read_text(errors="replace")
    assert code == 0, server_log[-3000:]
    assert "unexpected error" not in server_log, "no request reached the 500 handler"
    assert FULL_KEY not in server_log
