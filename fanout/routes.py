"""Routes files: YAML with a ``subscriptions`` list, applied to the subscriptions topic.

```yaml
subscriptions:
  - id: crm-users
    url: https://crm.example.com/hooks/users
    topics: [users]
    events: ["user.*"]
    secrets: [whsec_...]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fanout.config import DeliverySettings
from fanout.errors import ValidationFailed
from fanout.subscription import Subscription, parse_subscription


def check_url_allowed(sub: Subscription, delivery: DeliverySettings) -> None:
    if sub.url.startswith("http://") and not delivery.allow_http:
        raise ValidationFailed(
            f"{sub.id}.url",
            "http:// endpoints are refused; use https://, or set FANOUT_DELIVERY__ALLOW_HTTP=true",
        )


def parse_routes(document: Any, delivery: DeliverySettings, source: str = "routes") -> list[Subscription]:
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
