"""A raw HTTP/1.1 receiver for tests: an asyncio server that logs every request line and header line it
reads on each connection, exactly as they arrived, and answers each request 204. Unlike an aiohttp
server it hides nothing: a header split by an injected CR/LF, or a second request smuggled into the
bytes of the first, shows up as the extra lines and requests it is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

MAX_HEAD = 256 * 1024


@dataclass
class WireRequest:
    """One request as parsed off the connection: its request line, header lines and body."""

    connection: int
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]


@dataclass
class WireReceiver:
    requests: list[WireRequest] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> WireReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
                while (parsed := self._take(buffer, connection)) is not None:
                    request, buffer = parsed
                    self.requests.append(request)
                    writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                self._changed.set()
                if len(buffer) > MAX_HEAD:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    def _take(buffer: bytes, connection: int) -> tuple[WireRequest, bytes] | None:
        """The first complete request in ``buffer`` and the bytes after it, or None."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buffer[:end].decode("latin-1").split("\r\n")
        headers = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        lengths = [int(v) for n, v in headers if n.lower() == "content-length" and v.isdigit()]
        length = lengths[0] if lengths else 0
        start = end + 4
        if len(buffer) < start + length:
            return None
        return WireRequest(connection, head[0], headers, buffer[start : start + length]), buffer[
            start + length :
        ]

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait (with a deadline) until ``done()`` holds over the requests received so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            self._changed.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"timed out; received: {[(r.line, r.headers) for r in self.requests]}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
