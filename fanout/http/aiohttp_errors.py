"""aiohttp's client exceptions as the transport's (``fanout.http.transport``), for the aiohttp transport."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiohttp
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from fanout.http.ssrf import AddressRefused
from fanout.http.transport import (
    ConnectError,
    ConnectTimeout,
    EgressRefused,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    ServerDisconnected,
    TLSError,
    TransportError,
)


@dataclass
class RequestTrace:
    """What aiohttp's trace hooks told about one request: a connection was made, or an idle one reused."""

    connected: bool = False
    reused: bool = False


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _too_large(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and ("Got more than" in text or "Too many headers" in text)
    )


def translate(exc: BaseException, trace: RequestTrace) -> TransportError:
    """aiohttp's exception as the transport's."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        verify = getattr(exc.certificate_error, "verify_message", None)
        return TLSError(f"TLS certificate error: {verify or exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorSSLError):
        return TLSError(f"TLS error: {exc}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        if exc.status == 403:
            return EgressRefused(f"the egress proxy refused the target (HTTP {exc.status})")
        return ConnectError(f"the proxy answered CONNECT with HTTP {exc.status}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if isinstance(exc.os_error, AddressRefused):
            return EgressRefused(str(exc.os_error))
        return ConnectError(f"DNS error for {exc.host}: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(f"connect timed out: {exc}")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return ReadTimeout("no data from the server before the read deadline")
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ssl.SSLError):
            return TLSError(f"TLS error: {exc.os_error.reason or exc.os_error}")
        return ConnectError(f"connection failed: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, TimeoutError):
        if not trace.connected:
            return ConnectTimeout("no connection before the attempt's deadline")
        return ReadTimeout("no complete response before the deadline")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ServerDisconnected("server disconnected", received=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ServerDisconnected("server disconnected mid-body", received=True)
    if isinstance(exc, aiohttp.ClientOSError):
        if isinstance(exc.__cause__, ssl.SSLError) or isinstance(exc.__context__, ssl.SSLError):
            return TLSError(f"TLS error: {exc}")
        return ServerDisconnected(f"server disconnected: {exc.strerror or exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        if any(_too_large(cause) for cause in _causes(exc)):
            return ResponseTooLarge("response header block too large (a line over 8 KiB, or too many lines)")
        return ProtocolError(f"invalid HTTP response: {exc.message}")
    return ProtocolError(f"{type(exc).__name__}: {exc}")
