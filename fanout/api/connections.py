"""The API's connections: a deadline for reading each request, a cap per client address, and quiet
answers to malformed requests.

aiohttp's server bounds neither how long a client may take to send a request nor how many connections
one client may hold (its keep-alive timer only closes idle connections, after an hour by default), so a
client trickling bytes holds a connection, and a handler, as long as it likes. ``ApiRunner`` serves the
application through ``GuardedHandler``, aiohttp's connection protocol with three additions:

- **Read deadline.** A request (head and body) must arrive within ``read_timeout`` seconds of its first
  byte (for a new connection: of the connection). While the head is incomplete a timer enforces it: the
  client gets a ``408`` and the connection is closed. Once the head is in, the API's middleware
  (``fanout.api.middleware``) hands the rest of the deadline to the body read (``read_body``), which
  answers 408 and closes the connection when the body is late. A body the handler did not read (a 401,
  say) is drained by aiohttp only until the same deadline. Waiting for the broker afterwards is not
  reading, and is bounded by ``api.produce_timeout``.
- **Connections per client.** At most ``max_connections_per_client`` open connections per client
  address (0: no cap); one more is answered ``429`` and closed at once. Behind a proxy the client
  address is the proxy's.
- **Malformed requests** (an oversized request line or header, an invalid header...) get a 400
  problem and one log line at WARNING, without the offending bytes (they may hold a credential) and
  without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from fanout.api.problems import Problem

log = logging.getLogger("fanout.api")

READ_DEADLINE: web.RequestKey[float] = web.RequestKey("read_deadline")
RECHECK_SECONDS = 1.0


def _raw_problem(status: int, reason: str, detail: str) -> bytes:
    body = orjson.dumps({"type": f"urn:fanout:problem:{reason}", "title": detail, "status": status})
    head = (
        f"HTTP/1.1 {status} {detail}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


TOO_MANY_CONNECTIONS = _raw_problem(429, "too-many-connections", "Too Many Requests")
HEAD_TOO_SLOW = _raw_problem(408, "request-timeout", "Request Timeout")


@dataclass
class ConnectionLimits:
    """``read_timeout``: seconds from a request's first byte to its last; ``per_client``: open
    connections per client address (0: unlimited)."""

    read_timeout: float
    per_client: int
    open: Counter[str] = field(default_factory=Counter)

    def admit(self, client: str) -> bool:
        if self.per_client and self.open[client] >= self.per_client:
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


LIMITS: web.AppKey[ConnectionLimits] = web.AppKey("connection_limits")


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol, with the read deadline, the per-client cap and quiet 400s."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits
        self.lingering = self._lingering_time
        self.deadline = 0.0
        self.client: str | None = None
        self.began: float | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self.limits.admit(client):
            log.info("429 for a connection from %s: %d open already", client, self.limits.per_client)
            self._refuse(TOO_MANY_CONNECTIONS)
            return
        self.client = client
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.began is None:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.client is not None:
            self.limits.release(self.client)
            self.client = None
        super().connection_lost(exc)

    def request_started(self) -> float:
        """The head of a request is in: the head timer has nothing more to watch (it is left to expire,
        see ``_arm``); the deadline for its body (loop time)."""
        began = self.began if self.began is not None else self._loop.time()
        self.began = None
        self.busy = True
        self.deadline = began + self.limits.read_timeout
        return self.deadline

    def request_finished(self) -> None:
        """The handler is done. aiohttp may still read (and drop) a body the handler did not read, for
        ``lingering_time``: only until the request's deadline."""
        self.busy = False
        self._lingering_time = max(0.0, min(self.lingering, self.deadline - self._loop.time()))

    def _arm(self) -> None:
        """A request's first byte: its head is due ``read_timeout`` from now. One timer per connection
        is enough (a timer per request cost more than the rest of this class): when it fires early for
        the current request, it is set again for that request's deadline."""
        self.began = self._loop.time()
        if self.timer is None:
            self.timer = self._loop.call_at(self.began + self.limits.read_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self.timer = None
        if self._request_in_progress:  # a response is being written: look again once it is out
            self.timer = self._loop.call_later(RECHECK_SECONDS, self._head_too_slow)
            return
        if self.busy or self.began is None:
            return  # the head is in (or no request began): the next first byte sets a timer again
        due = self.began + self.limits.read_timeout
        if self._loop.time() < due:
            self.timer = self._loop.call_at(due, self._head_too_slow)
            return
        log.info("408 for a connection from %s: no complete request head in time", self.client)
        self._refuse(HEAD_TOO_SLOW)

    def _refuse(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            detail = "the request line or a header is longer than the limit"
        else:
            detail = "the request is not valid HTTP/1.1"
        # Not HTTP at all (TLS to a plain port, a scanner) is everyday noise on an open port: DEBUG.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(
            level, "400 for a malformed request from %s: %s (%s)", request.remote, detail, type(exc).__name__
        )
        response = Problem(400, detail, slug="malformed-request").response()
        response.force_close()
        return response


class GuardedServer(web.Server):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are ``GuardedHandler``s, limited by ``app[LIMITS]``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            limits=self.app[LIMITS],
            **server._kwargs,
        )


async def read_body(request: web.Request) -> bytes:
    """The request body, read by the request's deadline (408 after it). A body already received in full
    is read without arming a timer (reading it cannot wait)."""
    deadline = request.get(READ_DEADLINE)
    if deadline is None:
        return await request.read()
    try:
        if request.content.is_eof():
            return await request.read()
        async with asyncio.timeout_at(deadline):
            return await request.read()
    except TimeoutError:
        log.info("408 for %s %s from %s: body not read in time", request.method, request.path, request.remote)
        raise Problem(408, "the request did not arrive within the read timeout (api.read_timeout)") from None
    except ConnectionError:
        log.info(
            "%s %s from %s: the client left before its body arrived",
            request.method,
            request.path,
            request.remote,
        )
        raise Problem(400, "the connection closed before the body arrived") from None
