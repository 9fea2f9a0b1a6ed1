"""The benchmark's sink: nginx on loopback answering 204 (or 500 for 5% of requests on /flaky), logging
each request's receipt time (``$msec``) and ``webhook-id`` so that latency can be computed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 8m;
    client_body_buffer_size 64k;
    log_format receipts '$msec $http_webhook_id $status $uri';
    split_clients "${{request_id}}" $flaky {{ 5% 1; * 0; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /ready {{ return 204; }}
        location /flaky {{
            access_log {dir}/receipts.log receipts buffer=256k flush=1s;
            if ($flaky) {{ return 500 "failing on purpose\n"; }}
            return 204;
        }}
        location / {{
            access_log {dir}/receipts.log receipts buffer=256k flush=1s;
            return 204;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Receipt:
    at: float
    webhook_id: str
    status: int
    path: str


class Sink:
    """``with Sink(dir, port) as sink``: nginx runs until the block ends."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "receipts.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._read_upto = 0
        self._counts: dict[int, int] = {}

    def __enter__(self) -> Sink:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(CONF.format(dir=self.dir, port=self.port))
        self._proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(self.dir)], stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                    assert response.status == 204
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError(f"nginx did not start; see {self.dir}/error.log") from None
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def reset(self) -> None:
        """Start a fresh receipts log (nginx reopens its logs on SIGUSR1)."""
        self.log.unlink(missing_ok=True)
        self._read_upto, self._counts = 0, {}
        if self._proc is not None:
            self._proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 5
            while not self.log.exists() and time.monotonic() < deadline:
                time.sleep(0.02)

    def receipts(self) -> list[Receipt]:
        out = []
        if not self.log.exists():
            return out
        for line in self.log.read_text().splitlines():
            parts = line.split(" ")
            if len(parts) == 4:
                out.append(Receipt(float(parts[0]), parts[1], int(parts[2]), parts[3]))
        return out

    def count(self, status: int = 204) -> int:
        """Requests answered ``status`` so far, reading only what the log gained since the last call."""
        if not self.log.exists():
            return 0
        needle = f" {status} ".encode()
        with self.log.open("rb") as f:
            f.seek(self._read_upto)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self._counts[status] = self._counts.get(status, 0) + chunk[:complete].count(needle)
        self._read_upto += complete
        return self._counts[status]
