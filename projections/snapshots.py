"""The snapshots (checkpoints) view: the latest resumable state of every in-flight run and
of every session.

A run's row says how far it got (steps, messages recorded, tool calls started but not
finished) and disappears when the run completes or fails; a session's row stays and
tracks its turns. Operators use it to see what a restart will resume.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from domain.conversation import Conversation
from domain.run import AgentRun
from projections.base import Projection, ViewCursor, dumps, iso, loads

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
    tables: ClassVar[tuple[str, ...]] = ("al_snapshots",)
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
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        if isinstance(event, AgentRun.RunRequested):
            cursor.execute(
                "INSERT INTO al_snapshots (aggregate_id, kind, version, updated_at, task_id,"
                " agent, session_id) VALUES (?, 'run', ?, ?, ?, ?, ?)"
                " ON CONFLICT (aggregate_id) DO NOTHING",
                (
                    str(event.originator_id),
                    event.originator_version,
                    iso(event.timestamp),
                    event.task_id,
                    event.agent,
                    event.session_id,
                ),
            )
        elif isinstance(event, AgentRun.RunCompleted | AgentRun.RunFailed):
            cursor.execute(
                "DELETE FROM al_snapshots WHERE aggregate_id = ?", (str(event.originator_id),)
            )
        elif isinstance(event, AgentRun.ModelRequestSent):
            _update(cursor, event, "steps = ?, messages = messages + 1", (event.step,))
        elif isinstance(event, AgentRun.ModelResponseReceived):
            _update(cursor, event, "messages = messages + 1", ())
        elif isinstance(
            event, AgentRun.ToolCallStarted | AgentRun.ToolCallFinished | AgentRun.ToolCallFailed
        ):
            self._track_tool_call(event, cursor)
        elif isinstance(event, AgentRun.Event):
            _update(cursor, event, "kind = kind", ())
        elif isinstance(event, Conversation.ConversationStarted):
            cursor.execute(
                "INSERT INTO al_snapshots (aggregate_id, kind, version, updated_at, session_id)"
                " VALUES (?, 'session', ?, ?, ?) ON CONFLICT (aggregate_id) DO NOTHING",
                (
                    str(event.originator_id),
                    event.originator_version,
                    iso(event.timestamp),
                    event.session_id,
                ),
            )
        elif isinstance(event, Conversation.TurnRecorded):
            _update(cursor, event, "turns = ?, last_run_id = ?", (event.turn, event.run_id))

    def _track_tool_call(
        self,
        event: AgentRun.ToolCallStarted | AgentRun.ToolCallFinished | AgentRun.ToolCallFailed,
        cursor: ViewCursor,
    ) -> None:
        cursor.execute(
            "SELECT pending_tool_calls, version FROM al_snapshots WHERE aggregate_id = ?",
            (str(event.originator_id),),
        )
        row = cursor.fetchone()
        if row is None or row[1] >= event.originator_version:
            return
        pending: list[dict[str, str]] = [
            call for call in loads(row[0]) if call["tool_call_id"] != event.tool_call_id
        ]
        if isinstance(event, AgentRun.ToolCallStarted):
            pending.append({"tool_call_id": event.tool_call_id, "tool_name": event.tool_name})
        _update(cursor, event, "pending_tool_calls = ?", (dumps(pending),))


def _update(
    cursor: ViewCursor,
    event: AgentRun.Event | Conversation.Event,
    assignments: str,
    params: tuple[Any, ...],
) -> None:
    """Apply `assignments` to the aggregate's row unless this version was applied already."""
    cursor.execute(
        f"UPDATE al_snapshots SET {assignments}, version = ?, updated_at = ?"
        " WHERE aggregate_id = ? AND version < ?",
        (
            *params,
            event.originator_version,
            iso(event.timestamp),
            str(event.originator_id),
            event.originator_version,
        ),
    )


def _view(row: tuple[Any, ...]) -> SnapshotView:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["pending_tool_calls"] = loads(data["pending_tool_calls"])
    return SnapshotView.model_validate(data)


def get_snapshot(cursor: ViewCursor, aggregate_id: str) -> SnapshotView | None:
    """The snapshot of one aggregate (None for unknown or finished runs)."""
    cursor.execute(f"{_SELECT} WHERE aggregate_id = ?", (aggregate_id,))
    row = cursor.fetchone()
    return None if row is None else _view(row)


def list_snapshots(cursor: ViewCursor, kind: SnapshotKind | None = None) -> list[SnapshotView]:
    """Snapshots (of one kind, or all), most recently updated first."""
    if kind is None:
        cursor.execute(f"{_SELECT} ORDER BY updated_at DESC, aggregate_id")
    else:
        cursor.execute(f"{_SELECT} WHERE kind = ? ORDER BY updated_at DESC, aggregate_id", (kind,))
    return [_view(row) for row in cursor.fetchall()]
