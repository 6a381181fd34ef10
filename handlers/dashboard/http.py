"""The dashboard's HTTP/1.1 server: GET, HEAD and POST of a handler's routes, and
server-sent event streams.

Modelled on the operations server (`agentledger.handlers.operations.http`), and as wary
of its input, since the dashboard may face a network:
- one request per connection (`Connection: close`); a stream's body ends when the
  connection does, so no chunked encoding is ever written;
- the request head is read line by line, at most `MAX_HEAD_BYTES` (431 beyond) and
  `MAX_HEADER_LINES` headers, within `READ_TIMEOUT_S` (408); a request line that is not
  `METHOD /origin-form HTTP/1.x` in printable ASCII, a header that is not `name: value`,
  a repeated header the dashboard reads, or any request body (`Transfer-Encoding`, a
  `Content-Length` above 0) is answered 400/413 before a handler sees it;
- the query string is parsed as UTF-8 with at most `MAX_QUERY_FIELDS` fields and no name
  given twice; the path is never percent-decoded (routes match it as it came);
- at most `MAX_CONNECTIONS` connections at once (more are closed at once), of which at
  most `MAX_STREAMS` streams (503 beyond);
- every response carries the security headers of `SECURITY_HEADERS` (a strict
  Content-Security-Policy, `nosniff`, no referrer, no framing, no caching) unless the
  handler sets its own value of one of them;
- a handler gets `HANDLER_TIMEOUT_S`; every write `WRITE_TIMEOUT_S`: a stream whose
  client stops reading is ended, and so is one whose client closes or sends more bytes
  than a request may hold after its head.
Not a web framework: no keep-alive, no request bodies, no TLS (put a TLS proxy in front
of a dashboard that leaves the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import structlog

from agentledger.handlers.operations.http import (
    MAX_HEAD_BYTES,
    WRITE_TIMEOUT_S,
    BoundedServer,
)

__all__ = [
    "SECURITY_HEADERS",
    "DashboardHttp",
    "EventStream",
    "Handler",
    "Request",
    "Response",
    "Send",
]

log = structlog.get_logger("agentledger.dashboard")

MAX_HEADER_LINES = 64
MAX_QUERY_FIELDS = 16
READ_TIMEOUT_S = 5.0
"""A request head not complete after this long gets 408."""
HANDLER_TIMEOUT_S = 60.0
"""The longest a handler may take (a replay is the slowest: the app bounds it itself)."""
MAX_STREAMS = 16
"""Event streams open at once; more get 503."""
_STREAM_INPUT_BYTES = 1024
"""Bytes a stream's client may send after its request head before the stream is ended."""

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none';"
        " form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Sent with every response (a handler's own value of one of them wins)."""

_METHODS = ("GET", "HEAD", "POST")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(r"^/[\x21-\x7e]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SINGLE = frozenset(
    {"host", "authorization", "cookie", "origin", "content-length", "transfer-encoding"}
)
"""Headers the dashboard reads: one of them given twice is a bad request."""


@dataclass(frozen=True, kw_only=True)
class Request:
    """A request's head, checked (see the module docstring)."""

    method: str
    """GET, HEAD or POST."""
    path: str
    """The target up to `?`, as sent (never percent-decoded)."""
    query: Mapping[str, str]
    """The query string's fields, decoded."""
    headers: Mapping[str, str]
    """Header names in lower case -> value (the first, for a header the dashboard does
    not read that came twice)."""


@dataclass(frozen=True, kw_only=True)
class Response:
    """A complete answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers (a security header given here replaces the default)."""


Send = Callable[[bytes], Awaitable[None]]
"""Writes bytes to a stream's client (raises once the client is gone or too slow)."""


@dataclass(frozen=True, kw_only=True)
class EventStream:
    """A `text/event-stream` answer: `run(send)` writes it until it returns, or until
    the client goes (it is then cancelled)."""

    run: Callable[[Send], Coroutine[Any, Any, None]]
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response | EventStream]]


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.headers = headers or {}


class DashboardHttp(BoundedServer):
    """Serves `handler` on `host:port` (port 0: any free port) until `stop()`; the
    listening, the connection bound and stopping are the operations server's."""

    failure = "dashboard request failed"

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        super().__init__(host=host, port=port)
        self.handler = handler
        self.streams = 0
        """Event streams open now."""

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer, head_only = await self._answer(reader)
        if isinstance(answer, EventStream):
            if self.streams >= MAX_STREAMS:
                answer = _error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "5"})
            else:
                await self._stream(reader, writer, answer)
                return
        await self._write(writer, answer, head_only)
        await self._close(reader, writer, answer.status)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response | EventStream, bool]:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                request = await read_request(reader)
        except TimeoutError:
            return _error(HTTPStatus.REQUEST_TIMEOUT), False
        except _BadRequest as e:
            return _error(e.status, e.headers), False
        head_only = request.method == "HEAD"
        try:
            async with asyncio.timeout(HANDLER_TIMEOUT_S):
                return await self.handler(request), head_only
        except Exception:
            log.exception("dashboard handler failed", path=request.path[:200])
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR), head_only

    async def _write(
        self, writer: asyncio.StreamWriter, response: Response, head_only: bool
    ) -> None:
        head = _head(
            response.status,
            {
                "Content-Type": response.content_type,
                "Content-Length": str(len(response.body)),
                **response.headers,
            },
        )
        writer.write(head if head_only else head + response.body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: EventStream
    ) -> None:
        self.streams += 1
        runner: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            writer.write(
                _head(
                    200,
                    {
                        "Content-Type": "text/event-stream; charset=utf-8",
                        "X-Accel-Buffering": "no",
                        **stream.headers,
                    },
                )
            )
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()

            async def send(data: bytes) -> None:
                writer.write(data)
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.drain()

            runner = asyncio.create_task(stream.run(send))
            watcher = asyncio.create_task(_until_closed(reader))
            await asyncio.wait({runner, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done() and not runner.cancelled():
                error = runner.exception()
                if error is not None and not isinstance(error, ConnectionError | TimeoutError):
                    log.error("event stream failed", error=repr(error))
        finally:
            self.streams -= 1
            for part in (runner, watcher):
                if part is not None and not part.done():
                    part.cancel()
            parts = [p for p in (runner, watcher) if p is not None]
            if parts:
                await asyncio.wait(parts, timeout=WRITE_TIMEOUT_S)


async def read_request(reader: asyncio.StreamReader) -> Request:
    """The request whose head `reader` holds, checked (see the module docstring); raises
    `_BadRequest` for one that is not served, `IncompleteReadError` when the client
    closed before the end of its head."""
    lines: list[bytes] = []
    try:
        request_line = await reader.readline()
        if not request_line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(request_line, None)
        size = len(request_line)
        for _ in range(MAX_HEADER_LINES + 1):
            line = await reader.readline()
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise asyncio.IncompleteReadError(line, None)
            lines.append(line)
        else:
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    except (ValueError, asyncio.LimitOverrunError):
        # A line longer than the stream's limit (MAX_HEAD_BYTES).
        raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    method, target = _request_line(request_line)
    headers = _headers(lines)
    if "transfer-encoding" in headers:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    length = headers.get("content-length", "0")
    if not length.isdigit() or len(length) > 12:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    if int(length) > 0:
        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    path, _, query = target.partition("?")
    return Request(method=method, path=path, query=_query(query), headers=headers)


def _request_line(line: bytes) -> tuple[str, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.match(parts[0]):
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    if not _TARGET.match(target) or target.startswith("//") or "#" in target:
        raise _BadRequest(HTTPStatus.BAD_REQUEST)
    if method not in _METHODS:
        raise _BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(_METHODS)})
    return method, target


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("latin-1").rstrip("\r\n")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):  # also a folded (space-led) line
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        value = value.strip(" \t")
        if _CONTROL.search(value):
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        name = name.lower()
        if name in headers:
            if name in _SINGLE:
                raise _BadRequest(HTTPStatus.BAD_REQUEST)
            continue
        headers[name] = value
    return headers


def _query(query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except ValueError:  # too many fields, or not UTF-8 (UnicodeDecodeError)
        raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        fields[name] = value
    return fields


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    phrase = HTTPStatus(status)
    merged = dict(SECURITY_HEADERS)
    for name, value in headers.items():
        for known in list(merged):
            if known.lower() == name.lower():
                del merged[known]
        merged[name] = value
    lines = [f"HTTP/1.1 {phrase.value} {phrase.phrase}"]
    for name, value in {**merged, "Connection": "close"}.items():
        if "\r" in value or "\n" in value:  # never ours; never let one split the head
            raise ValueError(f"header {name} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Return when the client closes its side, or has sent more than a stream's client
    may (nothing is expected after the request head)."""
    received = 0
    with contextlib.suppress(ConnectionError):
        while received <= _STREAM_INPUT_BYTES:
            chunk = await reader.read(4096)
            if not chunk:
                return
            received += len(chunk)


def _error(status: HTTPStatus, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status=status.value, body=f"{status.phrase}\n".encode(), headers=headers or {})
