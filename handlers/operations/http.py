"""A tiny HTTP/1.1 server for operations endpoints: GET (and HEAD) of a few fixed paths.

It faces hostile input, so it is deliberately small: one request per connection
(`Connection: close`), the request head read line by line up to `MAX_HEAD_BYTES` within
`READ_TIMEOUT_S`, headers and bodies ignored, at most `MAX_CONNECTIONS` at once, every
write bounded by a timeout, and no input that can end the server. Not a web framework:
no keep-alive, no chunked bodies, no TLS (bind it to a private interface).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Self

import structlog

__all__ = ["BoundedServer", "OperationsServer", "Response", "Route", "linger"]

log = structlog.get_logger("agentledger.operations")

MAX_HEAD_BYTES = 8192
"""The longest request head (request line and headers) read; longer gets 431."""
MAX_HEADER_LINES = 100
READ_TIMEOUT_S = 5.0
"""A request head not complete after this long gets 408 (slow or stalled clients)."""
HANDLER_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
"""Connections served at once; more are closed at once."""
LINGER_S = 1.0
LINGER_BYTES = 256 * 1024
"""After an error answer, what the client still sends is discarded for at most this long
and this much (see `linger`)."""


@dataclass(frozen=True, kw_only=True)
class Response:
    """What a route answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers."""


Route = Callable[[], Awaitable[Response]]
"""Answers GET of one path (the query string is ignored)."""


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.headers = headers or {}


class BoundedServer(ABC):
    """What the small servers share (this one, and the dashboard's): listening on
    `host:port` (port 0: any free port), at most `MAX_CONNECTIONS` connections at once
    (more are dropped at once), and `stop()` ending the connections still open. A
    subclass says what one connection gets (`_converse`); whatever it raises ends that
    connection only."""

    failure = "request failed"
    """What a connection's unexpected error is logged as."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and end the connections still open."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=WRITE_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), WRITE_TIMEOUT_S)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing more to say
        except asyncio.CancelledError:
            # `stop()` (or the loop's shutdown) ends the connection. Not re-raised: asyncio
            # logs a connection callback that ends cancelled as an error.
            pass
        except Exception:
            log.exception(self.failure)
        finally:
            self._connections.discard(task)
            writer.transport.abort()  # a no-op once closed; else drops what is left

    @abstractmethod
    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request from `reader` and answer it on `writer`."""

    @staticmethod
    async def _close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int
    ) -> None:
        """After an answer: linger on an error answer (see `linger`), then close."""
        if status >= 400:
            await linger(reader, writer)
        writer.close()  # flushes what is buffered, then closes
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.wait_closed()


class OperationsServer(BoundedServer):
    """Serves `routes` on `host:port` (port 0: any free port) until `stop()`."""

    failure = "operations endpoint failed"

    def __init__(self, routes: Mapping[str, Route], *, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self.routes = dict(routes)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response, head_only = await self._answer(reader)
        await self._write(writer, response, head_only)
        await self._close(reader, writer, response.status)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                method, path = await _read_head(reader)
        except TimeoutError:
            return _error(HTTPStatus.REQUEST_TIMEOUT), False
        except _BadRequest as e:
            return _error(e.status, e.headers), False
        route = self.routes.get(path)
        if route is None:
            return _error(HTTPStatus.NOT_FOUND), method == "HEAD"
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT_S):
                response = await route()
        except Exception:
            log.exception("operations endpoint failed", path=path)
            response = _error(HTTPStatus.INTERNAL_SERVER_ERROR)
        return response, method == "HEAD"

    async def _write(
        self, writer: asyncio.StreamWriter, response: Response, head_only: bool
    ) -> None:
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head if head_only else head + response.body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of the request whose head `reader` holds; headers are read
    (bounded) and ignored. Raises `_BadRequest` for anything that is not a plain GET/HEAD
    of an origin-form target."""
    try:
        request_line = await reader.readline()
        size = len(request_line)
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readline()
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if line in (b"\r\n", b"\n", b""):
                break
        else:
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    except (ValueError, asyncio.LimitOverrunError):
        # A line longer than the stream's limit (MAX_HEAD_BYTES).
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    if not request_line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(request_line, None)  # closed before a full line
    parts = request_line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
    return method, target.split("?", 1)[0]


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then discard what the client is still sending (bounded): closing a
    socket with unread input resets the connection, and the client would lose the answer
    (a 431 to an oversized request, say) before reading it."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(LINGER_S):
            discarded = 0
            while discarded < LINGER_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                discarded += len(chunk)


def _error(status: HTTPStatus, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status=status.value, body=f"{status.phrase}\n".encode(), headers=headers or {})
