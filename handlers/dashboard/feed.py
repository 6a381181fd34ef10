"""The dashboard's live feed: a core NATS subscription to the relay's subjects keeps the
board current (`agentledger.handlers.dashboard.board`), and what changes goes out to
every open event stream.

- It subscribes before it reads the views, and holds what arrives meanwhile; then it
  folds that (the board skips what its read already holds), so nothing falls between
  the read and the subscription.
- The changes of the records a callback round brings are sent together, each once:
  the latest value of each run, agent, graph run or alert (a browser applies them as
  upserts, so a value sent twice is harmless).
- A browser that falls `MAX_PENDING` messages behind is dropped (its stream ends); its
  `EventSource` reconnects and starts again from the board's state.
- After NATS reconnects (messages may have been missed while it was away) the board is
  read again and every stream starts again from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agentledger.handlers.dashboard.board import Board, Change
from agentledger.handlers.dashboard.snapshot import read_board
from agentledger.infra.view_store import ViewStore

__all__ = ["FEED_AGGREGATES", "LiveFeed", "StreamClient", "sse"]

log = structlog.get_logger("agentledger.dashboard")

FEED_AGGREGATES = ("AgentRun", "TaskRejection", "GraphRun", "Alert")
"""The aggregates whose events the board folds: one wildcard subscription each
(`<prefix>.events.<aggregate>.*`). Not one per event name, although that would spare the
bulky events the board ignores (model requests, tool results, checkpoints): nats-py
hands each subscription's messages to a task of its own, so two subscriptions do not
keep the order of one run's events, and the board must see a run's events in order.
One subscription keeps the relay's order."""
MAX_PENDING = 2000
"""Messages a stream may have waiting before its browser is taken as too slow."""
_RECONNECT_CHECK_S = 1.0


def sse(kind: str, data: Any) -> bytes:
    """One server-sent event (the JSON holds no raw line break, so one `data:` line)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False, kw_only=True)
class StreamClient:
    """One open event stream: what waits to be sent to it."""

    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_PENDING)
    )
    dropped: bool = False
    """It fell too far behind (its stream ends; the browser reconnects)."""

    def offer(self, message: bytes | None) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()  # room for the end marker
            self.queue.put_nowait(None)


class LiveFeed:
    """See the module docstring."""

    def __init__(
        self,
        *,
        views: ViewStore,
        nc: Client,
        prefix: str,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._views = views
        self._nc = nc
        self._prefix = prefix
        self._on_record = on_record
        self.board = Board()
        self.clients: set[StreamClient] = set()
        self.received = 0
        """Relay messages received."""
        self._held: list[dict[str, Any]] | None = None
        """Records that arrive while the board is being read."""
        self._pending: dict[tuple[str, str], Change] = {}
        self._flush_soon: asyncio.Handle | None = None
        self._subscriptions: list[Subscription] = []
        self._watch: asyncio.Task[None] | None = None
        self._reconnects = 0

    @property
    def subjects(self) -> list[str]:
        return [f"{self._prefix}.events.{aggregate}.*" for aggregate in FEED_AGGREGATES]

    async def start(self) -> LiveFeed:
        for subject in self.subjects:
            self._subscriptions.append(await self._nc.subscribe(subject, cb=self._on_message))
        await self._nc.flush()  # the server has the subscriptions: read the views after
        self._reconnects = self._nc.stats.get("reconnects", 0)
        await self.reload()
        self._watch = asyncio.create_task(self._watch_reconnects())
        return self

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        for client in list(self.clients):
            client.offer(None)
        self.clients.clear()

    async def reload(self) -> None:
        """Read the board from the views again (holding what arrives meanwhile), then
        start every open stream again from it."""
        self._held = []
        try:
            board = await asyncio.to_thread(read_board, self._views)
        except BaseException:
            held, self._held = self._held, None
            for record in held:  # keep the old board going
                self._fold(record)
            raise
        held, self._held = self._held, None
        self.board = board
        self._pending.clear()
        for record in held:
            self._fold(record)
        state = sse("state", self.board.state())
        for client in self.clients:
            client.offer(state)
        log.info("dashboard board read", positions=board.positions, held=len(held))

    def open_stream(self) -> tuple[StreamClient, bytes]:
        """A new stream's client, and the state it starts from (taken together, with no
        await between: every change after that state reaches its queue)."""
        client = StreamClient()
        self.clients.add(client)
        return client, sse("state", self.board.state())

    def close_stream(self, client: StreamClient) -> None:
        self.clients.discard(client)

    async def _on_message(self, msg: Msg) -> None:
        self.received += 1
        try:
            record = json.loads(msg.data)
            if not isinstance(record, dict) or "notification_id" not in record:
                raise ValueError("not an event record")
        except ValueError as e:
            log.warning("dashboard: unreadable relay message", subject=msg.subject, error=str(e))
            return
        if self._on_record is not None:
            self._on_record(record)
        if self._held is not None:
            self._held.append(record)
            return
        self._fold(record)

    def _fold(self, record: dict[str, Any]) -> None:
        try:
            changes = self.board.apply(record)
        except (KeyError, TypeError, ValueError) as e:  # a record of another shape
            log.warning("dashboard: relay record not folded", error=repr(e))
            return
        for change in changes:
            self._pending[(change.kind, change.key)] = change
        if self._pending and self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = None
        pending, self._pending = self._pending, {}
        if not pending or not self.clients:
            return
        message = b"".join(sse(c.kind, c.value) for c in pending.values())
        for client in list(self.clients):
            client.offer(message)
            if client.dropped:
                self.clients.discard(client)
                log.warning("dashboard: a browser fell behind; its stream is restarted")

    async def _watch_reconnects(self) -> None:
        while True:
            await asyncio.sleep(_RECONNECT_CHECK_S)
            reconnects = self._nc.stats.get("reconnects", 0)
            if reconnects != self._reconnects:
                self._reconnects = reconnects
                log.info("dashboard: NATS reconnected; reading the board again")
                try:
                    await self.reload()
                except Exception:
                    log.exception("dashboard: reading the board failed; keeping the old one")
