"""The runs view: one row per agent run (and per rejected task) with its status, output,
usage, cost and timings, updated live as the run's events commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from domain.rejection import TaskRejection
from domain.run import AgentRun
from projections.base import Projection, ViewCursor, dumps, iso, loads

__all__ = ["RunStatusView", "RunView", "RunsProjection", "get_run", "list_runs"]

RunStatusView = Literal["running", "completed", "failed", "rejected"]

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
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        if isinstance(event, AgentRun.RunRequested):
            cursor.execute(
                "INSERT INTO al_runs (run_id, task_id, agent, session_id, status, prompt,"
                " metadata, retryable, requests, input_tokens, output_tokens, tool_calls,"
                " steps, requested_at, version)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, 0, 0, 0, 0, 0, 0, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING",
                (
                    str(event.originator_id),
                    event.task_id,
                    event.agent,
                    event.session_id,
                    event.prompt,
                    dumps(event.metadata),
                    iso(event.timestamp),
                    event.originator_version,
                ),
            )
        elif isinstance(event, AgentRun.ModelRequestSent):
            _update(cursor, event, "steps = ?", (event.step,))
        elif isinstance(event, AgentRun.ModelResponseReceived):
            _update(
                cursor,
                event,
                "requests = requests + 1, input_tokens = input_tokens + ?,"
                " output_tokens = output_tokens + ?",
                (event.input_tokens, event.output_tokens),
            )
        elif isinstance(event, AgentRun.ToolCallStarted):
            _update(cursor, event, "tool_calls = tool_calls + 1", ())
        elif isinstance(event, AgentRun.ToolCallFinished | AgentRun.ToolCallFailed):
            _update(cursor, event, "status = status", ())
        elif isinstance(event, AgentRun.RunCompleted):
            # The completion carries the run's totals: they win over the live sums.
            _update(
                cursor,
                event,
                "status = 'completed', output = ?, requests = ?, input_tokens = ?,"
                " output_tokens = ?, tool_calls = ?, cost_usd = ?, duration_ms = ?,"
                " finished_at = ?",
                (
                    dumps(event.output),
                    event.requests,
                    event.input_tokens,
                    event.output_tokens,
                    event.tool_calls,
                    event.cost_usd,
                    event.duration_ms,
                    iso(event.timestamp),
                ),
            )
        elif isinstance(event, AgentRun.RunFailed):
            _update(
                cursor,
                event,
                "status = 'failed', error_kind = ?, error_message = ?, retryable = ?,"
                " duration_ms = ?, finished_at = ?",
                (
                    event.error_kind,
                    event.message,
                    int(event.retryable),
                    event.duration_ms,
                    iso(event.timestamp),
                ),
            )
        elif isinstance(event, TaskRejection.TaskRejected):
            at = iso(event.timestamp)
            cursor.execute(
                "INSERT INTO al_runs (run_id, task_id, agent, status, metadata, error_kind,"
                " error_message, retryable, requests, input_tokens, output_tokens, tool_calls,"
                " steps, requested_at, finished_at, version)"
                " VALUES (?, ?, ?, 'rejected', '{}', ?, ?, 0, 0, 0, 0, 0, 0, ?, ?, ?)"
                " ON CONFLICT (run_id) DO NOTHING",
                (
                    str(event.originator_id),
                    event.task_id,
                    event.agent,
                    event.error_kind,
                    event.reason,
                    at,
                    at,
                    event.originator_version,
                ),
            )


def _update(
    cursor: ViewCursor, event: AgentRun.Event, assignments: str, params: Sequence[Any]
) -> None:
    """Apply `assignments` to the run's row unless this version was applied already."""
    cursor.execute(
        f"UPDATE al_runs SET {assignments}, version = ? WHERE run_id = ? AND version < ?",
        (
            *params,
            event.originator_version,
            str(event.originator_id),
            event.originator_version,
        ),
    )


def _view(row: tuple[Any, ...]) -> RunView:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["metadata"] = loads(data["metadata"])
    data["output"] = loads(data["output"])
    data["retryable"] = bool(data["retryable"])
    return RunView.model_validate(data)


def get_run(
    cursor: ViewCursor, *, run_id: str | None = None, task_id: str | None = None
) -> RunView | None:
    """One run by its run id, or the newest run of a task id; None if there is none."""
    if run_id is not None:
        cursor.execute(f"{_SELECT} WHERE run_id = ?", (run_id,))
    elif task_id is not None:
        cursor.execute(
            f"{_SELECT} WHERE task_id = ? ORDER BY requested_at DESC LIMIT 1", (task_id,)
        )
    else:
        raise ValueError("get_run needs run_id or task_id")
    row = cursor.fetchone()
    return None if row is None else _view(row)


def list_runs(
    cursor: ViewCursor,
    *,
    agent: str | None = None,
    status: RunStatusView | None = None,
    session_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[RunView]:
    """Runs matching every given filter, newest first."""
    if limit < 1 or offset < 0:
        raise ValueError(f"list_runs needs limit >= 1 and offset >= 0, got {limit}, {offset}")
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (("agent", agent), ("status", status), ("session_id", session_id)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    cursor.execute(
        f"{_SELECT}{where} ORDER BY requested_at DESC, run_id DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return [_view(row) for row in cursor.fetchall()]
