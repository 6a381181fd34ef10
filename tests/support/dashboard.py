"""Helpers for the dashboard's tests and benchmark: a catalog with a failing agent and an
alert rule, a graph and a workflow; plain HTTP requests and a server-sent events reader
over raw sockets (what a hostile or a simple client sends); a stand-in evaluation report
renderer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

CATALOG = """
[agents.calculator]
ref = "agentledger.catalog.example_agents:calculator"
price = { input_per_mtok = 0.15, output_per_mtok = 0.60 }

[agents.greeter]
ref = "agentledger.catalog.example_agents:greeter"

[agents.moody]
ref = "support.agents:moody"

[agents.risk_analyst]
ref = "agentledger.catalog.example_agents:risk_analyst"

[agents.optimist]
ref = "agentledger.catalog.example_team:optimist"

[agents.skeptic]
ref = "agentledger.catalog.example_team:skeptic"

[agents.realist]
ref = "agentledger.catalog.example_team:realist"

[agents.moderator]
ref = "agentledger.catalog.example_team:moderator"

[graphs.review]
ref = "agentledger.catalog.example_graphs:review"

[workflows.opinions]
pattern = "parallel"
agents = ["optimist", "skeptic", "realist"]
merge = "moderator"
policy = "best_effort"

[alerts.moody_errors]
agent = "moody"
metric = "error_rate"
window = "1m"
above = 0.5
clear_below = 0.2
min_samples = 3
"""
"""`moody` fails for a prompt starting with `fail`; three failures raise `moody_errors`."""

XSS_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@dataclass(frozen=True, kw_only=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status=status, headers=headers, body=body)


async def exchange(port: int, data: bytes, *, eof: bool = False, timeout: float = 10.0) -> bytes:
    """Send raw bytes (then, with `eof`, close the sending side) and read the answer until
    the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(data)
            await writer.drain()
            if eof:
                writer.write_eof()
        except ConnectionError:
            pass
        try:
            return await asyncio.wait_for(reader.read(), timeout)
        except ConnectionError:
            return b""
    finally:
        writer.close()


async def request(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> Answer:
    """One well-formed request (Host 127.0.0.1:<port> unless given)."""
    given = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if method == "POST":
        given.setdefault("Content-Length", "0")
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in given.items())
    raw = await exchange(port, (head + "\r\n").encode())
    return _parse(raw)


@dataclass(frozen=True, kw_only=True)
class ServerEvent:
    kind: str
    data: Any


class EventReader:
    """Reads an open `/events` stream."""

    def __init__(self, reader: asyncio.StreamReader, answer: Answer) -> None:
        self.reader = reader
        self.answer = answer
        self.latest: dict[tuple[str, str], Any] = {}
        """The latest value of each run, agent, graph run and alert read so far."""

    async def next(self, timeout: float = 10.0) -> ServerEvent:
        kind, data = "message", []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), timeout)).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "":
                if data:
                    event = ServerEvent(kind=kind, data=json.loads("\n".join(data)))
                    key = _KEYS.get(kind)
                    if key is not None:
                        self.latest[(kind, event.data[key])] = event.data
                    return event
                kind = "message"
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)

    async def until(self, predicate: Any, timeout: float = 20.0) -> ServerEvent:
        """The first event for which `predicate(event)` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no such event in time")
            event = await self.next(remaining)
            if predicate(event):
                return event

    async def until_latest(self, predicate: Any, timeout: float = 20.0) -> None:
        """Read on until `predicate(self.latest)` holds (it may hold already)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.latest):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"not seen in time; latest: {list(self.latest)}")
            await self.next(remaining)


_KEYS = {"run": "run_id", "agent": "agent", "graph": "run_id", "alert": "alert_id"}


@asynccontextmanager
async def event_stream(
    port: int, headers: dict[str, str] | None = None
) -> AsyncIterator[EventReader]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    given = {"Host": f"127.0.0.1:{port}", "Accept": "text/event-stream", **(headers or {})}
    head = "GET /events HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in given.items())
    writer.write((head + "\r\n").encode())
    await writer.drain()
    try:
        raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        yield EventReader(reader, _parse(raw_head))
    finally:
        writer.close()


def evaluation_report_html(views: Any, evaluation_id: str) -> str | None:
    """A stand-in for the evaluation feature's report renderer."""
    if evaluation_id != "eval-1":
        return None
    return "<html><body><h1>eval-1</h1><script>window.__pwned = 3</script></body></html>"
