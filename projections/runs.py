"""The runs view: one row per agent run (and per rejected task) with its status, output,
usage, cost and timings, updated live as the run's events commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.projections.base import (
    PLAIN,
    Projection,
    Sealer,
    ViewCursor,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    optional_key,
    select_by_run_or_task,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = ["RunStatusView", "RunView", "RunsProjection", "get_run", "list_runs"]

RunStatusView = Literal["running", "completed", "failed", "rejected", "paused"]

_COLUMNS = (
    "run_id",
    "task_id",
    "agent",
    "session_id",
    "status",
    "prompt",
    "metadata",
    "output",
    "error_kind",
    "error_message",
    "retryable",
    "requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost_usd",
    "steps",
    "requested_at",
    "finished_at",
    "duration_ms",
    "version",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM al_runs"


class RunView(BaseModel):
    """A run as the query API returns it. A rejected task is a row too (status
    `rejected`, `run_id` the rejection's id, the reason in `error_message`)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    task_id: str | None
    agent: str | None
    session_id: str | None
    status: RunStatusView
    prompt: str | None
    metadata: dict[str, str]
    output: Any
    error_kind: str | None
    error_message: str | None
    retryable: bool
    requests: int
    input_tokens: int
    output_tokens: int
    tool_calls: int
    cost_usd: float | None
    steps: int
    requested_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    version: int
    """The last aggregate version folded into this row."""


class RunsProjection(Projection):
    """Folds `AgentRun` and `TaskRejection` events into `al_runs`."""

    name: ClassVar[str] = "runs"
    tables: ClassVar[tuple[str, ...]] = ("al_runs",)
    ddl: ClassVar[tuple[str, ...]] = (
        """CREATE TABLE IF NOT EXISTS al_runs (
            run_id TEXT PRIMARY KEY,
            task_id TEXT,
            agent TEXT,
            session_id TEXT,
            status TEXT NOT NULL,
            prompt TEXT,
            metadata TEXT NOT NULL,
            output TEXT,
            error_kind TEXT,
            error_message TEXT,
            retryable INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            tool_calls INTEGER NOT NULL,
            cost_usd DOUBLE PRECISION,
            steps INTEGER NOT NULL,
            requested_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms DOUBLE PRECISION,
            version INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS al_runs_task_idx ON al_runs (task_id)",
        "CREATE INDEX IF NOT EXISTS al_runs_requested_idx ON al_runs (requested_at)",
        "CREATE INDEX IF NOT EXISTS al_runs_agent_idx ON al_runs (agent, requested_at)",
        "CREATE INDEX IF NOT EXISTS al_runs_session_idx ON al_runs (session_id, requested_at)",
        "CREATE INDEX IF NOT EXISTS al_runs_finished_idx ON al_runs (finished_at)",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Read the touched rows in one SELECT, fold each run's events into its row in
        memory, then write the new rows with one INSERT and the changed ones with one
        UPDATE (of the columns that can change)."""
        groups = group_by_aggregate(events, (AgentRun.Event, TaskRejection.TaskRejected))
        if not groups:
            return
        rows = select_rows(cursor, "al_runs", _COLUMNS, groups)
        new: list[tuple[Any, ...]] = []
        changed: list[tuple[Any, ...]] = []
        for run_id, run_events in groups.items():
            before = row = rows.get(run_id)
            for event in run_events:
                row = _fold(row, run_id, event, self.sealer)
            if row is None or row is before:
                continue
            if before is None:
                new.append(tuple(row[c] for c in _COLUMNS))
            else:
                changed.append((*(row[c] for c in _MUTABLE), run_id))
        if new:
            cursor.executemany(_UPSERT, new)
        if changed:
            cursor.executemany(_UPDATE, changed)


_UPSERT = upsert_sql("al_runs", _COLUMNS, ("run_id",))
_IMMUTABLE = ("run_id", "task_id", "agent", "session_id", "prompt", "metadata", "requested_at")
"""Set when the row is made, never changed (not sent again: the prompt may be long)."""
_MUTABLE = tuple(c for c in _COLUMNS if c not in _IMMUTABLE)
_UPDATE = f"UPDATE al_runs SET {', '.join(f'{c} = ?' for c in _MUTABLE)} WHERE run_id = ?"


def _fold(
    row: dict[str, Any] | None, run_id: str, event: object, sealer: Sealer = PLAIN
) -> dict[str, Any] | None:
    """The run's row after `event`: a new dict if the event changes it, else `row`.

    A creation event makes the row if there is none; any other event changes an existing
    row whose version is below its own (and sets the version), else nothing.
    """
    if isinstance(event, AgentRun.RunRequested):
        if row is not None:
            return row
        return _new_row(
            run_id=run_id,
            task_id=view_key(event.task_id),
            agent=view_key(event.agent),
            session_id=optional_key(event.session_id),
            status="running",
            prompt=sealer.seal(event.prompt),
            metadata=dumps(event.metadata),
            requested_at=iso(event.timestamp),
            version=event.originator_version,
        )
    if isinstance(event, TaskRejection.TaskRejected):
        if row is not None:
            return row
        at = iso(event.timestamp)
        return _new_row(
            run_id=run_id,
            task_id=optional_key(event.task_id),
            agent=optional_key(event.agent),
            status="rejected",
            metadata="{}",
            error_kind=event.error_kind,
            error_message=event.reason,
            requested_at=at,
            finished_at=at,
            version=event.originator_version,
        )
    if not isinstance(event, _UPDATES) or row is None:
        return row
    if row["version"] >= event.originator_version:
        return row
    row = dict(row)
    if isinstance(event, AgentRun.ModelRequestSent):
        row["steps"] = event.step
    elif isinstance(event, AgentRun.ModelResponseReceived):
        row["requests"] += 1
        row["input_tokens"] += event.input_tokens
        row["output_tokens"] += event.output_tokens
    elif isinstance(event, AgentRun.ToolCallStarted):
        row["tool_calls"] += 1
    elif isinstance(event, AgentRun.ToolCallFinished | AgentRun.ToolCallFailed):
        pass
    elif isinstance(event, AgentRun.RunPaused):
        row["status"] = "paused"
    elif isinstance(event, AgentRun.ToolCallResolved):
        row["status"] = "running"
    elif isinstance(event, AgentRun.RunCompleted):
        # The completion carries the run's totals: they win over the live sums.
        row.update(
            status="completed",
            output=sealer.seal(dumps(event.output)),
            requests=event.requests,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            tool_calls=event.tool_calls,
            cost_usd=event.cost_usd,
            duration_ms=event.duration_ms,
            finished_at=iso(event.timestamp),
        )
    elif isinstance(event, AgentRun.RunFailed):
        row.update(
            status="failed",
            error_kind=event.error_kind,
            error_message=event.message,
            retryable=int(event.retryable),
            duration_ms=event.duration_ms,
            finished_at=iso(event.timestamp),
        )
    row["version"] = event.originator_version
    return row


_UPDATES = (
    AgentRun.ModelRequestSent,
    AgentRun.ModelResponseReceived,
    AgentRun.ToolCallStarted,
    AgentRun.ToolCallFinished,
    AgentRun.ToolCallFailed,
    AgentRun.RunPaused,
    AgentRun.ToolCallResolved,
    AgentRun.RunCompleted,
    AgentRun.RunFailed,
)
"""The run events that change an existing row (each at least its version)."""


def _new_row(**values: Any) -> dict[str, Any]:
    """A row with the defaults of a new run, overridden by `values`."""
    row: dict[str, Any] = {
        "task_id": None,
        "agent": None,
        "session_id": None,
        "prompt": None,
        "output": None,
        "error_kind": None,
        "error_message": None,
        "retryable": 0,
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "tool_calls": 0,
        "cost_usd": None,
        "steps": 0,
        "finished_at": None,
        "duration_ms": None,
    }
    row.update(values)
    return row


def _view(row: tuple[Any, ...], sealer: Sealer) -> RunView:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["metadata"] = loads(data["metadata"])
    if data["prompt"] is not None:
        data["prompt"] = sealer.unseal(data["prompt"])
    data["output"] = None if data["output"] is None else loads(sealer.unseal(data["output"]))
    data["retryable"] = bool(data["retryable"])
    return RunView.model_validate(data)


def get_run(
    cursor: ViewCursor,
    *,
    run_id: str | None = None,
    task_id: str | None = None,
    sealer: Sealer = PLAIN,
) -> RunView | None:
    """One run by its run id, or the newest run of a task id; None if there is none."""
    row = select_by_run_or_task(
        cursor, _SELECT, run_id=run_id, task_id=task_id, newest="requested_at", query="get_run"
    )
    return None if row is None else _view(row, sealer)


def list_runs(
    cursor: ViewCursor,
    *,
    agent: str | None = None,
    status: RunStatusView | None = None,
    session_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    sealer: Sealer = PLAIN,
) -> list[RunView]:
    """Runs matching every given filter, newest first."""
    rows = select_page(
        cursor,
        _SELECT,
        (
            ("agent", optional_key(agent)),
            ("session_id", optional_key(session_id)),
            ("status", status),
        ),
        order_by="requested_at DESC, run_id DESC",
        limit=limit,
        offset=offset,
        query="list_runs",
    )
    return [_view(row, sealer) for row in rows]
