"""Routes files: YAML with a ``subscriptions`` list, applied to the subscriptions topic.

```yaml
subscriptions:
  - id: crm-users
    url: https://crm.example.com/hooks/users
    topics: [users]
    events: ["user.*"]
    secrets: [whsec_...]
```

Any string value may instead reference an environment variable or a file, so secrets need not be
written into the file: ``secrets: ["${env:CRM_SECRET}"]``, ``password: "${file:/run/secrets/crm}"``
(the file's content without a trailing newline). They are resolved when the file is loaded.

``client_certificate.cert_file``/``key_file`` must name files under ``delivery.client_cert_dir``
(``fanout.model.cert_paths``); the API takes inline PEM only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fanout.config import DeliverySettings
from fanout.http.ssrf import AddressPolicy, AddressRefused
from fanout.model.cert_paths import CertificatePathRefused, resolve_cert_file
from fanout.model.errors import ValidationFailed
from fanout.model.subscription import Subscription, parse_subscription


def check_url_allowed(sub: Subscription, delivery: DeliverySettings) -> None:
    """The scheme and IP-literal SSRF rules (names are checked when they are resolved, at every send)."""
    if sub.url.startswith("http://") and not delivery.allow_http:
        raise ValidationFailed(
            f"{sub.id}.url",
            "http:// endpoints are refused; use https://, or set FANOUT_DELIVERY__ALLOW_HTTP=true",
        )
    try:
        AddressPolicy(delivery.allow_cidrs).check_literal(urlsplit(sub.url).hostname or "")
    except AddressRefused as exc:
        raise ValidationFailed(f"{sub.id}.url", f"{exc}; delivery.allow_cidrs can admit it") from None


def check_certificate_files(sub: Subscription, delivery: DeliverySettings) -> None:
    """A routes file may name client certificate files only under ``delivery.client_cert_dir``."""
    cert = sub.client_certificate
    if cert is None:
        return
    for field, name in (("cert_file", cert.cert_file), ("key_file", cert.key_file)):
        if name is not None:
            try:
                resolve_cert_file(delivery.client_cert_dir, name)
            except CertificatePathRefused as exc:
                raise ValidationFailed(f"{sub.id}.client_certificate.{field}", str(exc)) from None


REFERENCE = re.compile(r"^\$\{(env|file):([^}]+)\}$")


def resolve_references(node: Any, where: str) -> Any:
    """``node`` with every ``${env:NAME}`` / ``${file:PATH}`` string replaced by what it names."""
    if isinstance(node, dict):
        return {k: resolve_references(v, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_references(v, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or not (match := REFERENCE.match(node)):
        return node
    kind, name = match.groups()
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ValidationFailed(where, f"environment variable {name} is not set")
        return value
    try:
        return Path(name).read_text().removesuffix("\n")
    except OSError as exc:
        raise ValidationFailed(where, f"cannot read {name}: {exc.strerror}") from None


def parse_routes(document: Any, delivery: DeliverySettings, source: str = "routes") -> list[Subscription]:
    document = resolve_references(document, source)
    items = document.get("subscriptions") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ValidationFailed(source, "expected a 'subscriptions' list")
    subs: list[Subscription] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationFailed(f"{source}.subscriptions[{i}]", "must be a mapping")
        sub = parse_subscription(item, default_id=f"subscriptions[{i}]")
        if sub.id in seen:
            raise ValidationFailed(f"{sub.id}.id", "appears twice")
        seen.add(sub.id)
        check_url_allowed(sub, delivery)
        check_certificate_files(sub, delivery)
        subs.append(sub)
    return subs


def load_routes(path: Path, delivery: DeliverySettings) -> list[Subscription]:
    """Parse and validate a routes file; ValidationFailed names the subscription and field."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValidationFailed(str(path), f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValidationFailed(str(path), f"not valid YAML: {exc}") from None
    return parse_routes(document, delivery, str(path))
