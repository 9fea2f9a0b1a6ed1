"""Raw asyncio servers on loopback for transport tests: HTTP servers that misbehave on purpose, a
blackholing listener, a small CONNECT / forwarding proxy, a name-mapping resolver and TLS certificates.

Nothing here parses more HTTP than a test needs; every server records what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import trustme
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fanout.http.fields import RequestTarget
from fanout.http.options import TransportOptions, open_transport
from fanout.http.proxy import ProxyRoutes
from fanout.http.ssrf import AddressPolicy
from fanout.http.transport import Limits, Origin, Request, ResponseLimits, Transport

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class RawRequest:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class Conn:
    """One accepted connection, as a handler sees it."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def request(self) -> RawRequest:
        """The next request (Content-Length bodies only); raises IncompleteReadError at EOF."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        line, *rest = head[:-4].decode("latin-1").split("\r\n")
        headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in rest)]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await self.reader.readexactly(length)
        request = RawRequest(line, headers, body)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """Counts connections (``connections``, ``open``, ``peak``) and records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.peak = 0
        self.requests: list[RawRequest] = []
        self.closed = asyncio.Event()  # set each time a connection ends
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self.handler(Conn(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self.closed.set()

    async def start(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@asynccontextmanager
async def serving(
    handler: Handler, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    server = RawServer(handler)
    await server.start(host, port, tls)
    try:
        yield server
    finally:
        server.stop()


def answer(*responses: bytes, close: bool = False) -> Handler:
    """Answers each request on a connection with the next of ``responses`` (the last repeats)."""

    async def handle(conn: Conn) -> None:
        i = 0
        while True:
            await conn.request()
            await conn.send(responses[min(i, len(responses) - 1)])
            i += 1
            if close:
                return

    return handle


def endless(head: bytes, chunk: bytes = b"x" * 65536) -> Handler:
    """Reads a request, sends ``head``, then ``chunk`` forever (until the client goes away)."""

    async def handle(conn: Conn) -> None:
        await conn.request()
        await conn.send(head)
        while True:
            await conn.send(chunk)

    return handle


@asynccontextmanager
async def blackhole(host: str = "127.0.0.2", port: int = 0) -> AsyncIterator[int]:
    """A listening socket whose accept queue is full: further connects get no answer (SYNs dropped)."""
    listener = socket.socket()
    listener.bind((host, port))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with suppress(BlockingIOError):
            filler.connect((host, port))
        fillers.append(filler)
    await asyncio.sleep(0.05)  # the handshakes of the fillers complete in the kernel, not in a task
    try:
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


class MapResolver(AbstractResolver):
    """Resolves the names in ``names`` to the given addresses (in order), others as the system does."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []
        self._default = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.names:
            return await self._default.resolve(host, port, family)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                proto=0,
                flags=socket.AI_NUMERICHOST,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
            )
            for a in self.names[host]
        ]

    async def close(self) -> None:
        await self._default.close()


# -- a proxy ---------------------------------------------------------------------------------------


@dataclass
class LocalProxy:
    """CONNECT tunnels and forwarded requests; names resolve through ``names`` (else as given).
    ``refuse`` answers CONNECT with that status; ``credentials`` ("user:password") requires them."""

    names: dict[str, str] = field(default_factory=dict)
    refuse: int | None = None
    credentials: str | None = None
    connects: list[str] = field(default_factory=list)
    forwarded: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    port: int = 0

    def _where(self, authority: str) -> tuple[str, int]:
        host, _, port = authority.rpartition(":")
        host = host.strip("[]")
        return self.names.get(host, host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            method, uri, _ = line.split(" ", 2)
            auth = next(
                (h.split(":", 1)[1].strip() for h in rest if h.lower().startswith("proxy-auth")), None
            )
            self.authorizations.append(auth)
            expected = (
                "Basic " + base64.b64encode(self.credentials.encode()).decode() if self.credentials else None
            )
            if expected is not None and auth != expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                self.connects.append(uri)
                if self.refuse is not None:
                    writer.write(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % self.refuse)
                    return
                up_reader, up_writer = await asyncio.open_connection(*self._where(uri))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                self.forwarded.append(line)
                authority, _, path = uri.removeprefix("http://").partition("/")
                up_reader, up_writer = await asyncio.open_connection(*self._where(authority))
                up_writer.write(f"{method} /{path} HTTP/1.1\r\n".encode() + head.split(b"\r\n", 1)[1])
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LocalProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


# -- TLS -------------------------------------------------------------------------------------------


def server_context(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def expired_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    """A server context whose certificate for ``name``, signed by ``ca``, expired yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _context_from(cert, key)


def self_signed_context(name: str) -> ssl.SSLContext:
    """A server context with a certificate for ``name`` that signs itself (no CA vouches for it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _context_from(cert, key)


def _context_from(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with trustme.Blob(pem).tempfile() as path:
        context.load_cert_chain(path)
    return context


# -- the transports under test ---------------------------------------------------------------------

TRANSPORTS = ("fast", "aiohttp")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@asynccontextmanager
async def open_test_transport(
    kind: str,
    resolver: AbstractResolver | None = None,
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = LOOPBACK,
    limits: Limits | None = None,
    response: ResponseLimits | None = None,
    proxies: ProxyRoutes | None = None,
    proxy_enforces_egress: bool = False,
) -> AsyncIterator[Transport]:
    options = TransportOptions(
        policy=AddressPolicy(allow),
        limits=limits or Limits(),
        response=response or ResponseLimits(),
        resolver=resolver or DefaultResolver(),
        proxies=proxies or ProxyRoutes(),
        proxy_enforces_egress=proxy_enforces_egress,
    )
    transport = open_transport(kind, options)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


def post(
    origin: Origin, target: str = "/hook", headers: list[tuple[str, str]] | None = None, body: bytes = b"{}"
) -> Request:
    fields = [("content-type", "application/json")] if headers is None else headers
    return Request(origin, RequestTarget.build(target), fields, body)
