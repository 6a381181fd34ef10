"""The metrics view: per agent, counts of runs by outcome, usage, cost, failure rate and
latency percentiles.

Usage is summed as model responses and tool calls commit, so failed and in-flight runs
count too. Latency is kept as one row per finished (completed or failed) run and the
percentiles are computed at query time with `domain.stats.percentile`. A rejected task
whose agent is unknown is counted under `UNKNOWN_AGENT`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from domain.rejection import TaskRejection
from domain.run import AgentRun
from domain.stats import percentile
from projections.base import Projection, ProjectionError, ViewCursor, iso

__all__ = ["UNKNOWN_AGENT", "AgentMetrics", "MetricsProjection", "agent_metrics"]

UNKNOWN_AGENT = "(unknown)"
"""The agent name rejections without an agent are counted under."""

_COUNTERS = (
    "runs",
    "completed",
    "failed",
    "rejected",
    "requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost_usd",
)


class AgentMetrics(BaseModel):
    """One agent's figures as the query API returns them."""

    model_config = ConfigDict(frozen=True)

    agent: str
    runs: int
    """Runs requested (rejected tasks are not runs)."""
    running: int
    completed: int
    failed: int
    rejected: int
    requests: int
    input_tokens: int
    output_tokens: int
    tool_calls: int
    cost_usd: float
    failure_rate: float | None
    """failed / (completed + failed); None before any run finished."""
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class MetricsProjection(Projection):
    """Folds `AgentRun` and `TaskRejection` events into `al_agent_metrics` and
    `al_metric_runs` (one row per run: its agent, outcome and latency)."""

    name: ClassVar[str] = "metrics"
    tables: ClassVar[tuple[str, ...]] = ("al_agent_metrics", "al_metric_runs")
    ddl: ClassVar[tuple[str, ...]] = (
        """CREATE TABLE IF NOT EXISTS al_agent_metrics (
            agent TEXT PRIMARY KEY,
            runs INTEGER NOT NULL DEFAULT 0,
            completed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0,
            requests BIGINT NOT NULL DEFAULT 0,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            tool_calls BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS al_metric_runs (
            run_id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            version INTEGER NOT NULL,
            duration_ms DOUBLE PRECISION,
            finished_at TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS al_metric_runs_agent_idx ON al_metric_runs (agent)",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        if isinstance(event, AgentRun.RunRequested):
            if _run_row(cursor, str(event.originator_id)) is None:
                _insert_run(cursor, event, event.agent, "running")
                _add(cursor, event.agent, runs=1)
        elif isinstance(event, TaskRejection.TaskRejected):
            agent = event.agent or UNKNOWN_AGENT
            if _run_row(cursor, str(event.originator_id)) is None:
                _insert_run(cursor, event, agent, "rejected")
                _add(cursor, agent, rejected=1)
        elif isinstance(event, AgentRun.Event):
            self._apply_run_event(event, cursor)

    def _apply_run_event(self, event: AgentRun.Event, cursor: ViewCursor) -> None:
        run_id = str(event.originator_id)
        row = _run_row(cursor, run_id)
        if row is None:
            raise ProjectionError(
                f"{type(event).__name__} of run {run_id} arrived before the run was"
                " requested; rebuild the metrics view"
            )
        agent, version = row
        if version >= event.originator_version:
            return
        finished: tuple[str, float] | None = None
        if isinstance(event, AgentRun.ModelResponseReceived):
            _add(
                cursor,
                agent,
                requests=1,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
            )
        elif isinstance(event, AgentRun.ToolCallStarted):
            _add(cursor, agent, tool_calls=1)
        elif isinstance(event, AgentRun.RunCompleted):
            _add(cursor, agent, completed=1, cost_usd=event.cost_usd or 0.0)
            finished = ("completed", event.duration_ms)
        elif isinstance(event, AgentRun.RunFailed):
            _add(cursor, agent, failed=1)
            finished = ("failed", event.duration_ms)
        if finished is None:
            cursor.execute(
                "UPDATE al_metric_runs SET version = ? WHERE run_id = ?",
                (event.originator_version, run_id),
            )
        else:
            cursor.execute(
                "UPDATE al_metric_runs SET version = ?, status = ?, duration_ms = ?,"
                " finished_at = ? WHERE run_id = ?",
                (event.originator_version, *finished, iso(event.timestamp), run_id),
            )


def _run_row(cursor: ViewCursor, run_id: str) -> tuple[str, int] | None:
    cursor.execute("SELECT agent, version FROM al_metric_runs WHERE run_id = ?", (run_id,))
    row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def _insert_run(
    cursor: ViewCursor,
    event: AgentRun.RunRequested | TaskRejection.TaskRejected,
    agent: str,
    status: str,
) -> None:
    cursor.execute(
        "INSERT INTO al_metric_runs (run_id, agent, status, version) VALUES (?, ?, ?, ?)",
        (str(event.originator_id), agent, status, event.originator_version),
    )


def _add(cursor: ViewCursor, agent: str, **amounts: float) -> None:
    """Add to an agent's counters, creating its row on first sight."""
    columns = list(amounts)
    cursor.execute(
        f"INSERT INTO al_agent_metrics (agent, {', '.join(columns)})"
        f" VALUES (?{', ?' * len(columns)}) ON CONFLICT (agent) DO UPDATE SET "
        + ", ".join(f"{c} = al_agent_metrics.{c} + excluded.{c}" for c in columns),
        (agent, *amounts.values()),
    )


def agent_metrics(cursor: ViewCursor, agent: str | None = None) -> list[AgentMetrics]:
    """Every agent's metrics (or one agent's), ordered by agent name."""
    where, params = (" WHERE agent = ?", (agent,)) if agent is not None else ("", ())
    cursor.execute(
        f"SELECT agent, {', '.join(_COUNTERS)} FROM al_agent_metrics{where} ORDER BY agent",
        params,
    )
    rows = cursor.fetchall()
    cursor.execute(
        "SELECT agent, duration_ms FROM al_metric_runs"
        f" WHERE duration_ms IS NOT NULL{where.replace(' WHERE', ' AND')}",
        params,
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    for name, duration_ms in cursor.fetchall():
        latencies[name].append(float(duration_ms))
    return [_metrics(row, latencies[row[0]]) for row in rows]


def _metrics(row: tuple[Any, ...], latencies: list[float]) -> AgentMetrics:
    figures = dict(zip(("agent", *_COUNTERS), row, strict=True))
    finished = figures["completed"] + figures["failed"]
    return AgentMetrics(
        **figures,
        running=figures["runs"] - finished,
        failure_rate=figures["failed"] / finished if finished else None,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_p99_ms=percentile(latencies, 99),
    )
