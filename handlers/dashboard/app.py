"""The dashboard's routes: the page and its static files, the live event stream, and the
JSON API the page calls.

| route | answers |
|---|---|
| `GET /` | the page (`?token=` on a token-guarded dashboard: sets the session cookie) |
| `GET /static/<file>` | the page's script, styles and the vendored Mermaid bundle |
| `GET /events` | server-sent events: `state` (the whole board) first, then `run`, `agent`, `graph` and `alert` changes as the relay publishes events |
| `GET /api/state` | the board now |
| `GET /api/runs?agent=&status=&limit=&offset=` | a page of the runs view |
| `GET /api/runs/<id>` | a run's (or graph run's, session's, rejected task's) event timeline |
| `POST /api/runs/<id>/replay` | replay it with the catalog's code: `identical` or the first divergence |
| `GET /api/graphs/<id>` | a graph run, drawn as Mermaid (and a workflow's messages) |
| `GET /api/alerts?state=&agent=&limit=` | the alerts view |
| `GET /api/evaluations` | the evaluations view, when there is one |
| `GET /evaluations/<id>/report.html` | an evaluation's report (`agentledger.handlers.dashboard.evaluations`) |

Input is hostile until checked: ids must match `ID_PATTERN`, every query field is
known and validated (unknown ones are a 400), and JSON is sent as
`application/json` with `<`, `>` and `&` escaped, so no answer can be read as markup.
One replay runs at a time (429 meanwhile), in a worker thread.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any

import structlog

from agentledger.domain.tasks import ID_PATTERN
from agentledger.handlers.dashboard.auth import Gate
from agentledger.handlers.dashboard.evaluations import REPORT_POLICY, evaluation_report_html
from agentledger.handlers.dashboard.feed import LiveFeed
from agentledger.handlers.dashboard.http import EventStream, Request, Response, Send
from agentledger.handlers.dashboard.reads import DashboardReads, NotFound, Unavailable
from agentledger.handlers.queries import QueryError

__all__ = [
    "HEARTBEAT_S",
    "REPLAY_TIMEOUT_S",
    "DashboardApp",
    "StaticFile",
    "json_response",
    "load_static",
]

log = structlog.get_logger("agentledger.dashboard")

HEARTBEAT_S = 15.0
"""An idle event stream sends a comment this often (finds browsers that went away)."""
REPLAY_TIMEOUT_S = 50.0
"""A replay not done by then is answered 504 (it still finishes in its thread)."""

_ID = re.compile(ID_PATTERN)
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}
_RUN_STATUSES = ("running", "completed", "failed", "rejected", "paused")
_ALERT_STATES = ("raised", "cleared")
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/$"), "page"),
    ("GET", re.compile(r"^/static/([A-Za-z0-9_.\-]{1,64})$"), "static"),
    ("GET", re.compile(r"^/events$"), "events"),
    ("GET", re.compile(r"^/api/state$"), "state"),
    ("GET", re.compile(r"^/api/runs$"), "runs"),
    ("GET", re.compile(r"^/api/runs/([^/]{1,300})$"), "timeline"),
    ("POST", re.compile(r"^/api/runs/([^/]{1,300})/replay$"), "replay"),
    ("GET", re.compile(r"^/api/graphs/([^/]{1,300})$"), "graph"),
    ("GET", re.compile(r"^/api/alerts$"), "alerts"),
    ("GET", re.compile(r"^/api/evaluations$"), "evaluations"),
    ("GET", re.compile(r"^/evaluations/([^/]{1,300})/report\.html$"), "report"),
]


class _Invalid(Exception):
    """A request's input is not acceptable (400 with this message)."""


@dataclass(frozen=True, kw_only=True)
class StaticFile:
    """One of the page's files, as served."""

    body: bytes
    content_type: str
    gzipped: bytes | None


def load_static() -> dict[str, StaticFile]:
    """The page's files, read once (the bundle is gzipped once for clients that take it)."""
    folder = resources.files("agentledger.handlers.dashboard") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if suffix not in _STATIC_TYPES or not entry.is_file():
            continue
        body = entry.read_bytes()
        files[entry.name] = StaticFile(
            body=body,
            content_type=_STATIC_TYPES[suffix],
            gzipped=gzip.compress(body, 6, mtime=0) if len(body) > 4096 else None,
        )
    return files


def json_response(data: Any, status: int = 200) -> Response:
    """`data` as JSON, `<`, `>` and `&` escaped (they can only occur inside strings)."""
    text = json.dumps(data, default=str, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Response(status=status, body=text.encode(), content_type="application/json")


def _error(status: HTTPStatus, message: str) -> Response:
    return json_response({"error": message}, status.value)


@dataclass(kw_only=True)
class DashboardApp:
    """Routes requests (see the module docstring); `handle` is the server's handler."""

    gate: Gate
    feed: LiveFeed
    reads: DashboardReads
    static: dict[str, StaticFile] = field(default_factory=load_static)
    _replaying: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def handle(self, request: Request) -> Response | EventStream:
        method = "GET" if request.method == "HEAD" else request.method
        allowed: set[str] = set()
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            allowed.add(route_method)
            if route_method != method:
                continue
            refusal = self.gate.refusal(request)
            if refusal is not None:
                return refusal
            try:
                return await self._route(name, request, *match.groups())
            except _Invalid as e:
                return _error(HTTPStatus.BAD_REQUEST, str(e))
        if allowed:
            methods = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
            return Response(
                status=HTTPStatus.METHOD_NOT_ALLOWED, body=b"method not allowed\n",
                headers={"Allow": methods},
            )  # fmt: skip
        return Response(status=HTTPStatus.NOT_FOUND, body=b"not found\n")

    async def _route(self, name: str, request: Request, *groups: str) -> Response | EventStream:
        handler: Callable[..., Awaitable[Response | EventStream]] = getattr(self, f"_{name}")
        return await handler(request, *groups)

    # -- the page --------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        _fields(request, {"token"})
        page = self.static["index.html"]
        headers = {}
        if self.gate.query_token_ok(request):
            headers["Set-Cookie"] = self.gate.session_cookie()
        return Response(body=page.body, content_type=page.content_type, headers=headers)

    async def _static(self, request: Request, name: str) -> Response:
        _fields(request, set())
        found = self.static.get(name)
        if found is None:
            return Response(status=HTTPStatus.NOT_FOUND, body=b"not found\n")
        headers = {"Cache-Control": "private, max-age=300", "Vary": "Accept-Encoding"}
        accepts = request.headers.get("accept-encoding", "")
        if found.gzipped is not None and "gzip" in accepts:
            headers["Content-Encoding"] = "gzip"
            return Response(body=found.gzipped, content_type=found.content_type, headers=headers)
        return Response(body=found.body, content_type=found.content_type, headers=headers)

    async def _events(self, request: Request) -> Response | EventStream:
        _fields(request, set())
        if request.method == "HEAD":
            return Response(content_type="text/event-stream; charset=utf-8")
        feed = self.feed

        async def run(send: Send) -> None:
            client, state = feed.open_stream()
            try:
                await send(b"retry: 2000\n\n" + state)
                while True:
                    try:
                        first = await asyncio.wait_for(client.queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        await send(b": ping\n\n")
                        continue
                    messages = [first]
                    while not client.queue.empty():
                        messages.append(client.queue.get_nowait())
                    done = None in messages
                    await send(b"".join(m for m in messages if m is not None))
                    if done:
                        return
            finally:
                feed.close_stream(client)

        return EventStream(run=run)

    async def _state(self, request: Request) -> Response:
        _fields(request, set())
        return json_response(self.feed.board.state())

    # -- the API ---------------------------------------------------------------

    async def _runs(self, request: Request) -> Response:
        query = _fields(request, {"agent", "status", "limit", "offset"})
        arguments: dict[str, Any] = {
            "agent": _id_or_none(query.get("agent"), "agent"),
            "status": _choice(query.get("status"), _RUN_STATUSES, "status"),
            "limit": _number(query.get("limit"), "limit", 1, 500, 100),
            "offset": _number(query.get("offset"), "offset", 0, 1_000_000, 0),
        }
        return await self._ask("runs", {k: v for k, v in arguments.items() if v is not None})

    async def _alerts(self, request: Request) -> Response:
        query = _fields(request, {"state", "agent", "limit"})
        arguments: dict[str, Any] = {
            "state": _choice(query.get("state"), _ALERT_STATES, "state"),
            "agent": _id_or_none(query.get("agent"), "agent"),
            "limit": _number(query.get("limit"), "limit", 1, 500, 100),
        }
        return await self._ask("alerts", {k: v for k, v in arguments.items() if v is not None})

    async def _ask(self, view: str, arguments: dict[str, Any]) -> Response:
        try:
            data = await asyncio.to_thread(self.reads.query, view, arguments)
        except QueryError as e:
            return _error(HTTPStatus.BAD_REQUEST, str(e))
        return json_response(data)

    async def _timeline(self, request: Request, identifier: str) -> Response:
        _fields(request, set())
        identifier = _id(identifier, "run id")
        try:
            return json_response(await asyncio.to_thread(self.reads.timeline, identifier))
        except NotFound as e:
            return _error(HTTPStatus.NOT_FOUND, str(e))

    async def _replay(self, request: Request, identifier: str) -> Response:
        _fields(request, set())
        identifier = _id(identifier, "run id")
        if self._replaying.locked():
            return _error(HTTPStatus.TOO_MANY_REQUESTS, "a replay is running; try again soon")
        await self._replaying.acquire()
        work = asyncio.ensure_future(asyncio.to_thread(self.reads.replay, identifier))

        def finished(done: asyncio.Future[dict[str, Any]]) -> None:
            self._replaying.release()
            if not done.cancelled():
                done.exception()  # retrieved: one ending after its 504 is not reported

        work.add_done_callback(finished)
        try:
            report = await asyncio.wait_for(asyncio.shield(work), REPLAY_TIMEOUT_S)
        except TimeoutError:
            return _error(HTTPStatus.GATEWAY_TIMEOUT, "the replay is taking long; try later")
        except NotFound as e:
            return _error(HTTPStatus.NOT_FOUND, str(e))
        except Unavailable as e:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, str(e))
        except Exception as e:  # the agent's code failed to load or run: say so
            log.warning("dashboard replay failed", run=identifier, error=repr(e))
            return _error(HTTPStatus.UNPROCESSABLE_ENTITY, f"the replay failed: {e}")
        return json_response(report)

    async def _graph(self, request: Request, identifier: str) -> Response:
        _fields(request, set())
        identifier = _id(identifier, "graph run id")
        try:
            return json_response(await asyncio.to_thread(self.reads.graph, identifier))
        except NotFound as e:
            return _error(HTTPStatus.NOT_FOUND, str(e))

    async def _evaluations(self, request: Request) -> Response:
        _fields(request, set())
        found = await asyncio.to_thread(self.reads.evaluations)
        for row in found["rows"]:
            evaluation_id = row.get("evaluation_id") if isinstance(row, dict) else None
            if isinstance(evaluation_id, str) and _ID.match(evaluation_id):
                row["report_url"] = f"/evaluations/{evaluation_id}/report.html"
        return json_response(found)

    async def _report(self, request: Request, identifier: str) -> Response:
        _fields(request, set())
        identifier = _id(identifier, "evaluation id")
        html = await asyncio.to_thread(evaluation_report_html, self.reads.views, identifier)
        if html is None:
            return Response(status=HTTPStatus.NOT_FOUND, body=b"no such evaluation report\n")
        return Response(
            body=html.encode(),
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": REPORT_POLICY},
        )


def _fields(request: Request, allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.query) - allowed - {"token"})
    if unknown:
        raise _Invalid(f"unknown query field {unknown[0][:40]!r}")
    return dict(request.query)


def _id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise _Invalid(f"bad {what}: letters, digits, _ - : only, 1 to 200 characters")
    return value


def _id_or_none(value: str | None, what: str) -> str | None:
    return None if value is None or value == "" else _id(value, what)


def _choice(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    if value in (None, ""):
        return None
    if value not in choices:
        raise _Invalid(f"bad {what}: one of {', '.join(choices)}")
    return value


def _number(value: str | None, what: str, low: int, high: int, default: int) -> int:
    if value in (None, ""):
        return default
    assert value is not None
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise _Invalid(f"bad {what}: a whole number from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise _Invalid(f"bad {what}: a whole number from {low} to {high}")
    return number
