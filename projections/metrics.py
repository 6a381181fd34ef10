"""The metrics view: per agent, counts of runs by outcome, usage, cost, failure rate and
latency percentiles.

Usage is summed as model responses and tool calls commit, so failed and in-flight runs
count too. Latency is kept as one row per finished (completed or failed) run and the
percentiles are computed at query time with `agentledger.domain.stats.percentile`. A rejected task
whose agent is unknown is counted under `UNKNOWN_AGENT`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.domain.stats import percentile
from agentledger.projections.base import (
    Projection,
    ProjectionError,
    ViewCursor,
    group_by_aggregate,
    iso,
    select_rows,
    upsert_sql,
)

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
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Read the touched `al_metric_runs` rows in one SELECT, fold the events in memory,
        then write each changed run row once and each agent's summed deltas once."""
        groups = group_by_aggregate(events, (AgentRun.Event, TaskRejection.TaskRejected))
        if not groups:
            return
        rows = select_rows(cursor, "al_metric_runs", _RUN_COLUMNS, groups)
        deltas: dict[str, _Deltas] = {}
        changed: list[tuple[Any, ...]] = []
        for run_id, run_events in groups.items():
            before = row = rows.get(run_id)
            for event in run_events:
                row = _fold(row, run_id, event, deltas)
            if row is not None and row is not before:
                changed.append(tuple(row[c] for c in _RUN_COLUMNS))
        if changed:
            cursor.executemany(_UPSERT_RUN, changed)
        _add(cursor, deltas)


_RUN_COLUMNS = ("run_id", "agent", "status", "version", "duration_ms", "finished_at")
_UPSERT_RUN = upsert_sql("al_metric_runs", _RUN_COLUMNS, ("run_id",))
_INTEGER_COUNTERS = _COUNTERS[:-1]
"""Every counter but `cost_usd`."""


@dataclass
class _Deltas:
    """What a batch adds to one agent's counters."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_INTEGER_COUNTERS, 0))
    costs: list[float] = field(default_factory=list)
    """Each completion's cost, in log order: added one at a time, as one event at a time
    would, so the floating-point sum does not depend on where batches start."""


def _fold(
    row: dict[str, Any] | None, run_id: str, event: object, deltas: dict[str, _Deltas]
) -> dict[str, Any] | None:
    """The run's row after `event` (a new dict if the event changes it, else `row`); what
    the event adds to its agent's counters goes to `deltas`."""
    if isinstance(event, AgentRun.RunRequested | TaskRejection.TaskRejected):
        if row is not None:
            return row
        if isinstance(event, AgentRun.RunRequested):
            agent, status, counter = event.agent, "running", "runs"
        else:
            agent, status, counter = event.agent or UNKNOWN_AGENT, "rejected", "rejected"
        deltas.setdefault(agent, _Deltas()).counts[counter] += 1
        return {
            "run_id": run_id,
            "agent": agent,
            "status": status,
            "version": event.originator_version,
            "duration_ms": None,
            "finished_at": None,
        }
    if not isinstance(event, AgentRun.Event):
        return row
    if row is None:
        raise ProjectionError(
            f"{type(event).__name__} of run {run_id} arrived before the run was"
            " requested; rebuild the metrics view"
        )
    if row["version"] >= event.originator_version:
        return row
    row = dict(row, version=event.originator_version)
    add = deltas.setdefault(row["agent"], _Deltas())
    if isinstance(event, AgentRun.ModelResponseReceived):
        add.counts["requests"] += 1
        add.counts["input_tokens"] += event.input_tokens
        add.counts["output_tokens"] += event.output_tokens
    elif isinstance(event, AgentRun.ToolCallStarted):
        add.counts["tool_calls"] += 1
    elif isinstance(event, AgentRun.RunCompleted):
        add.counts["completed"] += 1
        add.costs.append(event.cost_usd or 0.0)
        row.update(status="completed", duration_ms=event.duration_ms)
        row["finished_at"] = iso(event.timestamp)
    elif isinstance(event, AgentRun.RunFailed):
        add.counts["failed"] += 1
        row.update(status="failed", duration_ms=event.duration_ms)
        row["finished_at"] = iso(event.timestamp)
    return row


def _add(cursor: ViewCursor, deltas: dict[str, _Deltas]) -> None:
    """Add each agent's deltas to its counters, creating its row on first sight: one
    statement per number of costs to add (usually one in all)."""
    by_shape: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for agent, add in deltas.items():
        if not add.costs and not any(add.counts.values()):
            continue  # e.g. only tool calls finishing: nothing to add
        new_row_cost = 0.0
        for cost in add.costs:
            new_row_cost += cost
        by_shape[len(add.costs)].append((agent, *add.counts.values(), new_row_cost, *add.costs))
    for costs, params in by_shape.items():
        cursor.executemany(_add_sql(costs), params)


@lru_cache(maxsize=64)
def _add_sql(costs: int) -> str:
    columns = (*_INTEGER_COUNTERS, "cost_usd")
    assignments = [f"{c} = al_agent_metrics.{c} + excluded.{c}" for c in _INTEGER_COUNTERS]
    if costs:
        assignments.append("cost_usd = al_agent_metrics.cost_usd" + " + ?" * costs)
    return (
        f"INSERT INTO al_agent_metrics (agent, {', '.join(columns)})"
        f" VALUES (?{', ?' * len(columns)}) ON CONFLICT (agent) DO UPDATE SET "
        + ", ".join(assignments)
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
