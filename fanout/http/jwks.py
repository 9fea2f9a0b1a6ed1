"""Fetching an OAuth 2.0 issuer's JWKS document (``api.jwt.jwks_url``) for the API's token checks.

One GET, no redirects followed, under one total deadline, with the answer's size bounded by
``MAX_JWKS_BYTES``. Anything but a 200 carrying a JSON object raises ``JwksUnavailable`` with the
status or error class; the caller (``fanout.api.auth.Jwks``) parses the keys and keeps the last good
set when a refresh fails.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

MAX_JWKS_BYTES = 1024 * 1024


class JwksUnavailable(Exception):
    """The JWKS document could not be fetched or is not a JSON object."""


async def fetch_jwks(url: str, seconds: float) -> dict[str, Any]:
    """The JWKS document at ``url`` as a JSON object, within ``seconds``; raises ``JwksUnavailable``."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise JwksUnavailable(f"JWKS answered HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailable(f"the JWKS document is larger than {MAX_JWKS_BYTES} bytes")
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        raise JwksUnavailable(f"{type(exc).__name__}: {exc}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksUnavailable("the JWKS document is not JSON") from None
    if not isinstance(data, dict):
        raise JwksUnavailable("the JWKS document is not a JSON object")
    return data
