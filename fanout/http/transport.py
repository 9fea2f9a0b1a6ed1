"""The delivery transport boundary: one method, ``Transport.send(request, timeouts)``, and its errors.

The sender (``fanout.http.sender``) builds and signs a ``Request``; a transport only does I/O. It opens
(or reuses) a connection to ``request.origin``, writes one ``POST``, reads one final response, and
returns a ``Response``: the status, the raw header pairs and at most ``ResponseLimits.body_prefix``
bytes of the body. Redirects are never followed; informational responses (100, 103) are skipped; a
close-delimited body is complete when the server closes. A request is sent again, on a new connection,
only when it went out on a reused keep-alive connection and no byte of a response came back (the server
had closed that connection). Two implementations: ``fanout.http.fast`` (httptools, the default) and
``fanout.http.aiohttp_transport``; ``tests/integration/test_transport_conformance.py`` holds both to
the same outcomes.

Every failure is one of these (the class decides what the sender makes of it)::

    TransportError
    ├── PoolTimeout          no connection slot within Timeouts.pool: backpressure, not an attempt
    ├── ConnectError         no connection: DNS, refused, unreachable, the proxy failed
    │   ├── ConnectTimeout   no address answered within Timeouts.connect
    │   ├── TLSError         handshake or certificate failure (also a client certificate refused late)
    │   └── EgressRefused    the SSRF guard (or an egress proxy's 403) refused the target: permanent
    ├── WriteError           the connection broke while the request was written
    ├── ReadTimeout          no complete response within Timeouts.read / Timeouts.total
    ├── ProtocolError        the bytes that came back are not an HTTP/1.1 response (or a 101)
    │   └── ServerDisconnected   the server closed before a complete response
    ├── ResponseTooLarge     the header block or the body passed its cap; the connection is closed
    └── InvalidHeader        a request header name or value cannot go on the wire (CR, LF, NUL, non
                             Latin-1 value; non-token name): raised before any I/O, permanent
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fanout.http.fields import HeaderBlock, RequestTarget


class TransportError(Exception):
    """Base of every error a transport raises on account of the server, the network or the request."""


class PoolTimeout(TransportError):
    """Every connection slot stayed busy for ``Timeouts.pool``. Nothing was sent."""


class ConnectError(TransportError):
    """No connection to the origin (or through the proxy) could be made."""


class ConnectTimeout(ConnectError):
    """No address of the host completed TCP (and TLS) within ``Timeouts.connect``."""


class TLSError(ConnectError):
    """The TLS handshake failed: certificate, hostname, protocol; or the server refused our certificate."""


class EgressRefused(ConnectError):
    """The target is not allowed: the SSRF guard refused every address, or the egress proxy answered 403."""


class WriteError(TransportError):
    """The connection broke while the request was being written."""


class ReadTimeout(TransportError):
    """The complete response did not arrive before the read (or total) deadline."""


class ProtocolError(TransportError):
    """What the server sent is not a valid HTTP/1.1 response to a POST."""


class ServerDisconnected(ProtocolError):
    """The server closed the connection before a complete response. ``received``: any byte came back."""

    def __init__(self, message: str = "server disconnected", received: bool = False) -> None:
        super().__init__(message)
        self.received = received


class ResponseTooLarge(TransportError):
    """The response header block or body passed its cap; the connection was closed, not read further."""


class InvalidHeader(TransportError):
    """A request header cannot be written: a name that is not a token, or a value with CR, LF, NUL (or
    another control character) or a character outside Latin-1. Sending it again would fail the same way."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``pool``: waiting for a connection slot (not part of the attempt). ``connect``: each
    address's TCP connect, and the TLS handshake (happy eyeballs start the next address earlier).
    ``read``: from the request written to the complete response. ``total``: the attempt, from the slot
    obtained to the complete response (connect, write and read together)."""

    connect: float
    read: float
    pool: float
    total: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Connections. ``max_connections`` open in total (idle ones included: the oldest idle connection, of
    any origin, is closed to make room for a new one), ``connections_per_host`` per origin,
    ``max_keepalive`` idle ones kept, each for at most ``keepalive_expiry`` seconds."""

    max_connections: int = 4096
    connections_per_host: int = 256
    max_keepalive: int = 1024
    keepalive_expiry: float = 4.0


@dataclass(frozen=True, slots=True)
class ResponseLimits:
    """Bytes. ``header_block``: the status line and headers (of the final and any 1xx response).
    ``body_prefix``: how much of the body the ``Response`` keeps. ``body``: the hard cap on the body as it
    comes over the wire (chunk framing and trailers included); past it the connection is closed."""

    header_block: int = 64 * 1024
    body_prefix: int = 64 * 1024
    body: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go, and the connection pool's key. Senders reuse one instance per origin (the
    hash is computed once). ``host`` is the ASCII (IDNA) name or the bare IP literal."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None = field(default=None, compare=True)
    host_header: bytes = field(init=False, compare=False, repr=False)
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        header = (host if self.port == default else f"{host}:{self.port}").encode("ascii")
        object.__setattr__(self, "host_header", header)
        object.__setattr__(self, "_hash", hash((self.scheme, self.host, self.port, self.tls)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def authority(self) -> str:
        """``host:port`` as a CONNECT request names it (IPv6 literals in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(slots=True)
class Request:
    """One POST. ``target``: the origin-form path and query, checked once (``RequestTarget``). ``fixed``:
    headers checked once (``HeaderBlock``, e.g. a subscription's own headers); ``headers``: the
    per-delivery ones, checked by the transport on every send. ``host`` and ``content-length`` are the
    transport's."""

    origin: Origin
    target: RequestTarget
    headers: list[tuple[str, str]]
    body: bytes
    fixed: HeaderBlock | None = None


@dataclass(slots=True)
class Response:
    """The final response. ``headers``: raw (name, value) pairs as received; ``body``: its first
    ``ResponseLimits.body_prefix`` bytes; ``body_size``: the whole body's length as it was read (after
    chunked decoding), so a reader of ``body`` knows whether it was cut."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    body_size: int = 0

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Transport(Protocol):
    """Sends requests; ``start()`` inside the running loop first, ``close()`` at the end.

    ``send`` either returns the final response or raises a ``TransportError`` subclass; it never raises
    anything else on account of the server (``CancelledError`` passes through). It never blocks the
    loop; every wait has a deadline from ``timeouts``. Memory held per request is bounded by
    ``ResponseLimits``, whatever the server sends."""

    async def start(self) -> None: ...

    async def send(self, request: Request, timeouts: Timeouts) -> Response: ...

    async def close(self) -> None: ...
