"""One HTTP/1.1 client connection: an asyncio protocol that parses responses with ``httptools`` (llhttp).

``send(data, deadline)`` writes one request and returns a future for its final response. Framing:

- 1xx responses (100, 103, ...) are skipped; a 101 is a ``ProtocolError`` (fanout never asks to switch).
- A body framed by neither Content-Length nor chunked coding ends when the server closes: that EOF
  completes the response (a 2xx then is a success, not a disconnect).
- The connection is kept only when the response allows it (HTTP/1.1 without ``Connection: close``,
  HTTP/1.0 with ``Connection: keep-alive``), and only if nothing arrives while it is idle.

Limits (``ResponseLimits``): the header block may take ``header_block`` bytes (all 1xx heads included);
the body keeps its first ``body_prefix`` bytes; past ``header_block + body`` bytes on the wire the
connection is aborted with ``ResponseTooLarge``. The deadline is a timer on the loop: a server that
trickles one byte a second still fails with ``ReadTimeout`` at the deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, cast

import httptools

from fanout.http.transport import (
    ProtocolError,
    ReadTimeout,
    Response,
    ResponseLimits,
    ResponseTooLarge,
    ServerDisconnected,
    TLSError,
    TransportError,
    WriteError,
)

if TYPE_CHECKING:
    from fanout.http.fast.pool import HostPool

BODYLESS = (204, 304)


class Connection(asyncio.Protocol):
    __slots__ = (
        "_body", "_body_size", "_budget", "_closing", "_eof_body", "_framed", "_head_room", "_headers",
        "_in_head", "_interim", "_limits", "_loop", "_prefix_room", "_status", "_timer", "_waiter", "closed",
        "host", "idle_since", "line_start", "parser", "proxy_line", "received", "transport",
    )  # fmt: skip
    _loop: asyncio.AbstractEventLoop  # set by connection_made, with ``transport``

    def __init__(self, limits: ResponseLimits) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._limits = limits
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.received = False
        self.idle_since = 0.0
        self.host: HostPool | None = None
        self.line_start = b"POST "  # "POST http://host:port" when forwarded by a proxy
        self.proxy_line = b""
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: bytearray | None = None
        self._body_size = 0
        self._prefix_room = self._limits.body_prefix
        self._head_room = self._limits.header_block
        self._budget = self._limits.header_block + self._limits.body
        self._in_head = True
        self._interim = False
        self._framed = False
        self._closing = False
        self._eof_body = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        # Python 3.11's get_running_loop() makes a getpid() system call (its fork check): once per
        # connection, not per request
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: the connection cannot be trusted with a request
            self.abort()
            return
        self.received = True
        size = len(data)
        self._budget -= size
        if self._budget < 0:
            limits = self._limits
            what = f"header block over {limits.header_block}" if self._in_head else f"body over {limits.body}"
            self._fail(ResponseTooLarge(f"response {what} bytes; connection closed"))
            return
        if self._in_head and size > self._head_room:
            room = self._head_room
            self._head_room = 0
            self._feed(data[:room])
            if self._in_head and self._waiter is not None:
                limit = self._limits.header_block
                self._fail(ResponseTooLarge(f"response header block over {limit} bytes; connection closed"))
                return
            data = data[room:]
        elif self._in_head:
            self._head_room -= size
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not self._in_head and self._eof_body:
            self._complete()  # a close-delimited body ends here
        elif isinstance(exc, ssl.SSLError):
            self._fail(TLSError(f"TLS error: {exc.reason or exc}"))
        else:
            self._fail(ServerDisconnected("server disconnected", self.received))
        if self.host is not None:
            self.host.lost(self)

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:
            self.abort()  # bytes after the response: the connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer
        self._headers.append((name, value))
        size = len(name)
        if size == 10 or size == 14 or size == 17:
            lowered = name.lower()
            if lowered == b"connection":
                self._closing = self._closing or value.lower().strip() == b"close"
            elif lowered == b"content-length":
                self._framed = True
            elif lowered == b"transfer-encoding":
                self._framed = self._framed or value.lower().rstrip().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self._fail(ProtocolError("101 Switching Protocols: fanout never asks to switch"))
            self._interim = True
            return
        self._status = status
        self._eof_body = not self._framed and status not in BODYLESS

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        room = self._prefix_room
        if room > 0:
            if self._body is None:
                self._body = bytearray()
            self._body += body if len(body) <= room else body[:room]
            self._prefix_room = room - len(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if self._interim:
            self._interim = False
            self._in_head = True
            self._headers = []
            self._framed = self._closing = False
            return
        if not self.parser.should_keep_alive() or self._closing:
            self.close()
        self._complete()

    # -- the client's side -------------------------------------------------------------------------

    def send(self, data: bytes, deadline: float) -> asyncio.Future[Response]:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise WriteError("the connection closed before the request was written")
        loop = self._loop
        self._reset()
        self.received = False
        waiter = self._waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._expired)
        transport.write(data)
        return waiter

    def _expired(self) -> None:
        self._timer = None
        self._fail(ReadTimeout("no complete response before the deadline"))

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            body = bytes(self._body) if self._body else b""
            waiter.set_result(Response(self._status, self._headers, body, self._body_size))

    def _fail(self, exc: TransportError) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (it is in an unknown state)."""
        self.closed = True
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()
