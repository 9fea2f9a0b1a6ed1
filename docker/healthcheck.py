#!/opt/fanout/bin/python
"""Container HEALTHCHECK: healthy when the fanout server in this container answers 200 on /healthz.

One image runs every role, so the check asks the dispatcher's probe port
(``FANOUT_DISPATCHER__HTTP_PORT``, default 8081) and the API's port (``FANOUT_API__PORT``, default 8080)
and passes if either answers 200. ``FANOUT_HEALTHCHECK_URL`` replaces both with one URL. A role that
serves no HTTP (``fanout topics create``, ``fanout listen``) should disable or replace the check.
"""

import os
import sys
import urllib.request


def urls() -> list[str]:
    if explicit := os.environ.get("FANOUT_HEALTHCHECK_URL"):
        return [explicit]
    ports = [
        os.environ.get("FANOUT_DISPATCHER__HTTP_PORT", "8081"),
        os.environ.get("FANOUT_API__PORT", "8080"),
    ]
    return [f"http://127.0.0.1:{port}/healthz" for port in ports]


def main() -> int:
    problems = []
    for url in urls():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return 0
                problems.append(f"{url}: {response.status}")
        except Exception as exc:
            problems.append(f"{url}: {exc}")
    print("unhealthy: " + "; ".join(problems), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
