"""The egress proxy: which deliveries go through one, and the CONNECT handshake.

``delivery.proxy`` (an ``http://[user[:password]@]host[:port]`` URL) sends every delivery through that
proxy. Without it, ``delivery.trust_env`` takes the proxy from ``HTTPS_PROXY`` (https targets) and
``HTTP_PROXY`` (http targets), upper or lower case, and skips the hosts ``NO_PROXY`` lists (names,
``.suffix`` and ``*``, as curl does). https targets go through a ``CONNECT`` tunnel, TLS end to end;
http targets are forwarded (absolute-form request line and ``Proxy-Authorization`` on each request).

The SSRF guard: unless ``delivery.proxy_enforces_egress`` says the proxy enforces egress itself, the
target's name is resolved and checked here first, and the proxy is asked for the checked address
(``CONNECT 203.0.113.7:443``; TLS still verifies the name), so the proxy's own DNS answer cannot
differ from the one checked. With ``proxy_enforces_egress`` the proxy is given the name. The proxy's
own address is operator configuration and is not checked. A proxy answering ``403`` to a CONNECT
refused the target (``EgressRefused``, permanent); any other refusal is a ``ConnectError``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

from fanout.config.transport import parse_proxy_url
from fanout.http.transport import ConnectError, EgressRefused, ProtocolError
from fanout.model.errors import ConfigError

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*")


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy: where it listens, and the ``Proxy-Authorization`` value (None without credentials)."""

    host: str
    port: int
    authorization: str | None = None

    @property
    def url(self) -> str:
        """The proxy's URL without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def parse(cls, url: str, password: str | None = None, where: str = "delivery.proxy") -> Proxy:
        """An ``http://`` proxy URL (a bare ``host:port`` means http); ``password`` overrides the URL's.
        Raises ``ConfigError`` naming ``where``."""
        try:
            host, port, user, url_password = parse_proxy_url(url)
        except ValueError as exc:
            raise ConfigError(f"{where}: not a usable proxy URL: {exc}") from None
        authorization = None
        if user is not None:
            secret = password if password is not None else url_password or ""
            authorization = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        return cls(host, port, authorization)


class ProxyRoutes:
    """``for_target(scheme, host)``: the proxy a target goes through, or None for a direct connection."""

    def __init__(
        self, proxy: Proxy | None = None, by_scheme: Mapping[str, Proxy] | None = None, no_proxy: str = ""
    ) -> None:
        self._proxy = proxy
        self._by_scheme = dict(by_scheme or {})
        self._no_proxy = no_proxy

    @property
    def any(self) -> bool:
        return self._proxy is not None or bool(self._by_scheme)

    def proxies(self) -> list[Proxy]:
        return [p for p in (self._proxy, *self._by_scheme.values()) if p is not None]

    def for_target(self, scheme: str, host: str) -> Proxy | None:
        if self._proxy is not None:
            return self._proxy
        proxy = self._by_scheme.get(scheme)
        if proxy is None or (self._no_proxy and proxy_bypass_environment(host, {"no": self._no_proxy})):
            return None
        return proxy

    @classmethod
    def configure(
        cls,
        proxy: str | None,
        password: str | None,
        trust_env: bool,
        environ: Mapping[str, str] | None = None,
    ) -> ProxyRoutes:
        """From the settings (and, with ``trust_env``, the environment); raises ``ConfigError``."""
        if proxy:
            return cls(Proxy.parse(proxy, password))
        if not trust_env:
            return cls()
        env = os.environ if environ is None else environ
        by_scheme: dict[str, Proxy] = {}
        for scheme in ("https", "http"):
            for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
                if env.get(name):
                    by_scheme[scheme] = Proxy.parse(env[name], where=name)
                    break
        no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
        return cls(None, by_scheme, no_proxy)


def authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_tunnel(sock: socket.socket, target: str, proxy: Proxy, limit: int) -> None:
    """``CONNECT target`` (``host:port``) on ``sock``, a connection to ``proxy``; returns once the proxy
    answered 2xx (the socket then carries the tunnel). Reads at most ``limit`` bytes of the answer."""
    loop = asyncio.get_running_loop()
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.authorization:
        head += f"Proxy-Authorization: {proxy.authorization}\r\n"
    await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        if len(answer) > limit:
            raise ProtocolError(f"the proxy's answer to CONNECT is longer than {limit} bytes")
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectError(f"the proxy at {proxy.url} closed the connection during CONNECT")
        answer += chunk
    status_head, _, rest = answer.partition(b"\r\n\r\n")
    match = STATUS_LINE.match(status_head)
    if match is None:
        raise ProtocolError("the proxy's answer to CONNECT is not HTTP/1.x")
    status = int(match[1])
    if status == 403:
        raise EgressRefused(f"the egress proxy refused {target} (HTTP 403)")
    if not 200 <= status < 300:
        raise ConnectError(f"the proxy answered CONNECT {target} with HTTP {status}")
    if rest:
        raise ProtocolError("the proxy sent bytes before the tunnel was used")
