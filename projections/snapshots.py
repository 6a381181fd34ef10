"""The snapshots (checkpoints) view: the latest resumable state of every in-flight run and
of every session.

A run's row says how far it got (steps, messages recorded, tool calls started but not
finished) and disappears when the run completes or fails; a session's row stays and
tracks its turns. Operators use it to see what a restart will resume.

A finished run leaves a tombstone (`al_snapshot_ends`: its id and final version), so an
earlier event of it applied again (a duplicated or replayed `RunRequested`, a batch
applied twice) never brings its row back: every event of a run with a tombstone is
ignored (a finished run records nothing more).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentledger.domain.conversation import Conversation
from agentledger.domain.run import AgentRun
from agentledger.projections.base import (
    Projection,
    ViewCursor,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    optional_key,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = [
    "PendingToolCall",
    "SnapshotKind",
    "SnapshotView",
    "SnapshotsProjection",
    "get_snapshot",
    "list_snapshots",
]

SnapshotKind = Literal["run", "session"]

_COLUMNS = (
    "aggregate_id",
    "kind",
    "version",
    "updated_at",
    "task_id",
    "agent",
    "session_id",
    "steps",
    "messages",
    "pending_tool_calls",
    "turns",
    "last_run_id",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM al_snapshots"


class PendingToolCall(BaseModel):
    """A tool call recorded as started, with no result or failure yet."""

    model_config = ConfigDict(frozen=True)

    tool_call_id: str
    tool_name: str


class SnapshotView(BaseModel):
    """The latest state of one in-flight run (`kind="run"`) or one session."""

    model_config = ConfigDict(frozen=True)

    aggregate_id: str
    kind: SnapshotKind
    version: int
    updated_at: datetime
    task_id: str | None = None
    agent: str | None = None
    session_id: str | None = None
    steps: int = 0
    """Run: model requests sent."""
    messages: int = 0
    """Run: messages recorded (requests and responses)."""
    pending_tool_calls: list[PendingToolCall] = []
    """Run: tool calls a resume must run (their results are not recorded)."""
    turns: int = 0
    """Session: turns recorded."""
    last_run_id: str | None = None
    """Session: the run of the latest turn."""


class SnapshotsProjection(Projection):
    """Folds `AgentRun` and `Conversation` events into `al_snapshots`."""

    name: ClassVar[str] = "snapshots"
    version: ClassVar[int] = 2
    """2: tombstones of finished runs (`al_snapshot_ends`)."""
    tables: ClassVar[tuple[str, ...]] = ("al_snapshots", "al_snapshot_ends")
    ddl: ClassVar[tuple[str, ...]] = (
        """CREATE TABLE IF NOT EXISTS al_snapshots (
            aggregate_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            task_id TEXT,
            agent TEXT,
            session_id TEXT,
            steps INTEGER NOT NULL DEFAULT 0,
            messages INTEGER NOT NULL DEFAULT 0,
            pending_tool_calls TEXT NOT NULL DEFAULT '[]',
            turns INTEGER NOT NULL DEFAULT 0,
            last_run_id TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS al_snapshots_kind_idx ON al_snapshots (kind, updated_at)",
        """CREATE TABLE IF NOT EXISTS al_snapshot_ends (
            aggregate_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        )""",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Read the touched rows and tombstones (one SELECT each), fold each aggregate's
        events into its row in memory, then upsert the changed rows, delete the finished
        runs' rows and record their tombstones."""
        groups = group_by_aggregate(events, (AgentRun.Event, Conversation.Event))
        if not groups:
            return
        ended = select_rows(cursor, "al_snapshot_ends", ("aggregate_id", "version"), groups)
        rows = select_rows(cursor, "al_snapshots", _COLUMNS, groups.keys() - ended.keys())
        changed: list[tuple[Any, ...]] = []
        gone: list[tuple[str]] = []
        tombstones: list[tuple[str, int]] = []
        for aggregate_id, aggregate_events in groups.items():
            if aggregate_id in ended:
                continue  # finished: whatever comes again is older than its end
            before = row = rows.get(aggregate_id)
            for event in aggregate_events:
                row = _fold(row, aggregate_id, event)
                if row is _ENDED:
                    tombstones.append((aggregate_id, event.originator_version))
                    break
            if row is _ENDED:
                if before is not None:
                    gone.append((aggregate_id,))
            elif row is not None and row is not before:
                changed.append(tuple(row[c] for c in _COLUMNS))
        if gone:
            cursor.executemany("DELETE FROM al_snapshots WHERE aggregate_id = ?", gone)
        if tombstones:
            cursor.executemany(_INSERT_TOMBSTONE, tombstones)
        if changed:
            cursor.executemany(_UPSERT, changed)


_UPSERT = upsert_sql("al_snapshots", _COLUMNS, ("aggregate_id",))
_INSERT_TOMBSTONE = (
    "INSERT INTO al_snapshot_ends (aggregate_id, version) VALUES (?, ?)"
    " ON CONFLICT (aggregate_id) DO NOTHING"
)
_ENDED: dict[str, Any] = {}
"""What `_fold` returns for a run that ended (its row goes, a tombstone stays)."""


def _fold(row: dict[str, Any] | None, aggregate_id: str, event: object) -> dict[str, Any] | None:
    """The aggregate's row after `event`: a new dict (or `_ENDED`) if the event changes
    it, else `row`.

    A creation event makes the row if there is none, the end of a run ends it (whether
    its row was seen or not), and any other event changes an existing row whose version
    is below its own (setting the version and `updated_at`), else nothing.
    """
    if isinstance(event, AgentRun.RunRequested):
        if row is not None:
            return row
        return _new_row(
            aggregate_id=aggregate_id,
            kind="run",
            version=event.originator_version,
            updated_at=iso(event.timestamp),
            task_id=view_key(event.task_id),
            agent=view_key(event.agent),
            session_id=optional_key(event.session_id),
        )
    if isinstance(event, Conversation.ConversationStarted):
        if row is not None:
            return row
        return _new_row(
            aggregate_id=aggregate_id,
            kind="session",
            version=event.originator_version,
            updated_at=iso(event.timestamp),
            session_id=view_key(event.session_id),
        )
    if isinstance(event, AgentRun.RunCompleted | AgentRun.RunFailed):
        return _ENDED
    if not isinstance(event, AgentRun.Event | Conversation.TurnRecorded):
        return row
    if row is None or row["version"] >= event.originator_version:
        return row
    row = dict(row, version=event.originator_version, updated_at=iso(event.timestamp))
    if isinstance(event, AgentRun.ModelRequestSent):
        row["steps"] = event.step
        row["messages"] += 1
    elif isinstance(event, AgentRun.ModelResponseReceived):
        row["messages"] += 1
    elif isinstance(
        event, AgentRun.ToolCallStarted | AgentRun.ToolCallFinished | AgentRun.ToolCallFailed
    ):
        pending: list[dict[str, str]] = [
            call
            for call in loads(row["pending_tool_calls"])
            if call["tool_call_id"] != event.tool_call_id
        ]
        if isinstance(event, AgentRun.ToolCallStarted):
            pending.append({"tool_call_id": event.tool_call_id, "tool_name": event.tool_name})
        row["pending_tool_calls"] = dumps(pending)
    elif isinstance(event, Conversation.TurnRecorded):
        row["turns"] = event.turn
        row["last_run_id"] = event.run_id
    return row


def _new_row(**values: Any) -> dict[str, Any]:
    """A row with the column defaults, overridden by `values`."""
    row: dict[str, Any] = {
        "task_id": None,
        "agent": None,
        "session_id": None,
        "steps": 0,
        "messages": 0,
        "pending_tool_calls": "[]",
        "turns": 0,
        "last_run_id": None,
    }
    row.update(values)
    return row


def _view(row: tuple[Any, ...]) -> SnapshotView:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["pending_tool_calls"] = loads(data["pending_tool_calls"])
    return SnapshotView.model_validate(data)


def get_snapshot(cursor: ViewCursor, aggregate_id: str) -> SnapshotView | None:
    """The snapshot of one aggregate (None for unknown or finished runs)."""
    cursor.execute(f"{_SELECT} WHERE aggregate_id = ?", (aggregate_id,))
    row = cursor.fetchone()
    return None if row is None else _view(row)


def list_snapshots(
    cursor: ViewCursor, kind: SnapshotKind | None = None, *, limit: int = 50, offset: int = 0
) -> list[SnapshotView]:
    """Snapshots (of one kind, or all), most recently updated first: at most `limit`,
    after skipping `offset`."""
    rows = select_page(
        cursor,
        _SELECT,
        (("kind", kind),),
        order_by="updated_at DESC, aggregate_id",
        limit=limit,
        offset=offset,
        query="list_snapshots",
    )
    return [_view(row) for row in rows]
