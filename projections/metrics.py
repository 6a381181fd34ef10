"""The metrics view: per agent, counts of runs by outcome, usage, cost, failure rate and
latency percentiles.

Usage is summed as model responses and tool calls commit, so failed and in-flight runs
count too. Cost is summed exactly, in integer nano-dollars (each run's cost rounded to
the nearest nano-dollar once), so the total does not depend on how the log was cut into
batches: a view folded live equals its rebuild. The query returns it in dollars.

Latency percentiles (p50, p95, p99) are approximate, from a per-agent histogram of
finished (completed or failed) runs with log-scale buckets (`agentledger.domain.stats`:
16 per doubling, each keeping its count, smallest and largest duration). They follow
`agentledger.domain.stats.percentile` (linear interpolation between order statistics)
over estimated order statistics: exact when the values they fall on are alone in their
bucket, otherwise within 4.4 % of the exact value. A query reads at most one row per
non-empty bucket per agent (about 250 cover 10 ms to 10 minutes), however many runs there
were. A rejected task whose agent is unknown is counted under `UNKNOWN_AGENT`; agent names
are view keys (`agentledger.projections.base.view_key`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.domain.stats import HistogramBucket, bucket_of, histogram_percentile
from agentledger.projections.base import (
    Projection,
    ProjectionError,
    ViewCursor,
    group_by_aggregate,
    iso,
    optional_key,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = [
    "COUNTERS",
    "NANO_USD",
    "UNKNOWN_AGENT",
    "AgentMetrics",
    "MetricsProjection",
    "agent_metrics",
    "latency_buckets",
    "metrics_of",
    "nano_usd",
]

UNKNOWN_AGENT = "(unknown)"
"""The agent name rejections without an agent are counted under."""
NANO_USD = 1_000_000_000
"""Nano-dollars per dollar: the unit costs are summed in."""

_COUNTERS = (
    "runs",
    "completed",
    "failed",
    "rejected",
    "requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost_nusd",
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
    """Summed exactly (in nano-dollars), returned in dollars."""
    failure_rate: float | None
    """failed / (completed + failed); None before any run finished."""
    latency_p50_ms: float | None
    """Approximate (see the module docstring); None before any run finished."""
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class MetricsProjection(Projection):
    """Folds `AgentRun` and `TaskRejection` events into `al_agent_metrics` (per agent
    counters), `al_metric_latency` (per agent latency histogram) and `al_metric_runs` (one
    row per run: its agent, outcome, latency and the version last applied)."""

    name: ClassVar[str] = "metrics"
    version: ClassVar[int] = 2
    """2: cost in integer nano-dollars; latency as a histogram."""
    tables: ClassVar[tuple[str, ...]] = ("al_agent_metrics", "al_metric_runs", "al_metric_latency")
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
            cost_nusd BIGINT NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS al_metric_runs (
            run_id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            version INTEGER NOT NULL,
            duration_ms DOUBLE PRECISION,
            finished_at TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS al_metric_latency (
            agent TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            runs BIGINT NOT NULL,
            low_ms DOUBLE PRECISION NOT NULL,
            high_ms DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (agent, bucket)
        )""",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Read the touched `al_metric_runs` rows in one SELECT, fold the events in memory,
        then write each changed run row once, and each agent's summed counters and
        histogram buckets once."""
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


_IN_CHUNK = 500
"""Agents per `IN (...)` list of a query."""
_RUN_COLUMNS = ("run_id", "agent", "status", "version", "duration_ms", "finished_at")
_UPSERT_RUN = upsert_sql("al_metric_runs", _RUN_COLUMNS, ("run_id",))
_ADD_COUNTERS = (
    f"INSERT INTO al_agent_metrics (agent, {', '.join(_COUNTERS)})"
    f" VALUES (?{', ?' * len(_COUNTERS)}) ON CONFLICT (agent) DO UPDATE SET "
    + ", ".join(f"{c} = al_agent_metrics.{c} + excluded.{c}" for c in _COUNTERS)
)
_ADD_LATENCIES = (
    "INSERT INTO al_metric_latency (agent, bucket, runs, low_ms, high_ms) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (agent, bucket) DO UPDATE SET runs = al_metric_latency.runs + excluded.runs,"
    " low_ms = CASE WHEN excluded.low_ms < al_metric_latency.low_ms"
    " THEN excluded.low_ms ELSE al_metric_latency.low_ms END,"
    " high_ms = CASE WHEN excluded.high_ms > al_metric_latency.high_ms"
    " THEN excluded.high_ms ELSE al_metric_latency.high_ms END"
)

COUNTERS = _COUNTERS
"""The per-agent counters the view keeps (`cost_nusd`: nano-dollars)."""


@dataclass
class _Deltas:
    """What a batch adds to one agent's figures."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    latencies: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Durations of the runs that finished, by histogram bucket."""

    def finished(self, duration_ms: float) -> None:
        if math.isfinite(duration_ms):  # a run without a measurable latency adds none
            self.latencies[bucket_of(duration_ms)].append(duration_ms)


def nano_usd(cost_usd: float | None) -> int:
    """A cost in dollars as whole nano-dollars (0 when no cost is known)."""
    if cost_usd is None or not math.isfinite(cost_usd):
        return 0
    return round(cost_usd * NANO_USD)


def _fold(
    row: dict[str, Any] | None, run_id: str, event: object, deltas: dict[str, _Deltas]
) -> dict[str, Any] | None:
    """The run's row after `event` (a new dict if the event changes it, else `row`); what
    the event adds to its agent's figures goes to `deltas`."""
    if isinstance(event, AgentRun.RunRequested | TaskRejection.TaskRejected):
        if row is not None:
            return row
        if isinstance(event, AgentRun.RunRequested):
            agent, status, counter = view_key(event.agent), "running", "runs"
        else:
            agent, status, counter = (
                optional_key(event.agent) or UNKNOWN_AGENT,
                "rejected",
                "rejected",
            )
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
    elif isinstance(event, AgentRun.RunCompleted | AgentRun.RunFailed):
        if isinstance(event, AgentRun.RunCompleted):
            add.counts["completed"] += 1
            add.counts["cost_nusd"] += nano_usd(event.cost_usd)
            row["status"] = "completed"
        else:
            add.counts["failed"] += 1
            row["status"] = "failed"
        add.finished(event.duration_ms)
        row.update(duration_ms=event.duration_ms, finished_at=iso(event.timestamp))
    return row


def _add(cursor: ViewCursor, deltas: dict[str, _Deltas]) -> None:
    """Add each agent's deltas to its counters and histogram, creating rows on first
    sight: two statements in all."""
    counters: list[tuple[Any, ...]] = []
    latencies: list[tuple[Any, ...]] = []
    for agent, add in deltas.items():
        if any(add.counts.values()):  # e.g. only tool calls finishing: nothing to add
            counters.append((agent, *add.counts.values()))
        for bucket, durations in sorted(add.latencies.items()):
            latencies.append((agent, bucket, len(durations), min(durations), max(durations)))
    if counters:
        cursor.executemany(_ADD_COUNTERS, counters)
    if latencies:
        cursor.executemany(_ADD_LATENCIES, latencies)


def agent_metrics(
    cursor: ViewCursor, agent: str | None = None, *, limit: int = 100, offset: int = 0
) -> list[AgentMetrics]:
    """Every agent's metrics (or one agent's), ordered by agent name: at most `limit`
    agents, after skipping `offset`. Reads the agents' rows and their histograms' buckets,
    never the runs."""
    rows = select_page(
        cursor,
        f"SELECT agent, {', '.join(_COUNTERS)} FROM al_agent_metrics",
        (("agent", optional_key(agent)),),
        order_by="agent",
        limit=limit,
        offset=offset,
        query="agent_metrics",
    )
    histograms: dict[str, list[HistogramBucket]] = defaultdict(list)
    agents = [row[0] for row in rows]
    for start in range(0, len(agents), _IN_CHUNK):
        chunk = agents[start : start + _IN_CHUNK]
        cursor.execute(
            "SELECT agent, runs, low_ms, high_ms FROM al_metric_latency"
            f" WHERE agent IN ({', '.join('?' * len(chunk))}) ORDER BY agent, bucket",
            chunk,
        )
        for name, runs, low_ms, high_ms in cursor.fetchall():
            histograms[name].append(
                HistogramBucket(count=int(runs), low=float(low_ms), high=float(high_ms))
            )
    return [_metrics(row, histograms[row[0]]) for row in rows]


def latency_buckets(
    cursor: ViewCursor, agents: Sequence[str]
) -> dict[str, dict[int, HistogramBucket]]:
    """The latency histogram of each of `agents`, bucket number -> bucket (only non-empty
    buckets): what a live fold (the dashboard) starts from to keep the same percentiles as
    this view, adding durations with `agentledger.domain.stats.bucket_of`."""
    found: dict[str, dict[int, HistogramBucket]] = defaultdict(dict)
    for start in range(0, len(agents), _IN_CHUNK):
        chunk = list(agents[start : start + _IN_CHUNK])
        cursor.execute(
            "SELECT agent, bucket, runs, low_ms, high_ms FROM al_metric_latency"
            f" WHERE agent IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for name, bucket, runs, low_ms, high_ms in cursor.fetchall():
            found[name][int(bucket)] = HistogramBucket(
                count=int(runs), low=float(low_ms), high=float(high_ms)
            )
    return dict(found)


def _metrics(row: tuple[Any, ...], latency: list[HistogramBucket]) -> AgentMetrics:
    return metrics_of(row[0], dict(zip(_COUNTERS, row[1:], strict=True)), latency)


def metrics_of(
    agent: str, counters: Mapping[str, int], latency: Sequence[HistogramBucket]
) -> AgentMetrics:
    """An agent's figures from its counters (`COUNTERS`, cost in nano-dollars) and its
    latency histogram's non-empty buckets in bucket order: how this view answers, and
    how a live fold of the same events (the dashboard) answers alike."""
    figures: dict[str, Any] = {c: int(counters.get(c, 0)) for c in _COUNTERS}
    finished = figures["completed"] + figures["failed"]
    cost_nusd = figures.pop("cost_nusd")
    return AgentMetrics(
        agent=agent,
        **figures,
        cost_usd=cost_nusd / NANO_USD,
        running=figures["runs"] - finished,
        failure_rate=figures["failed"] / finished if finished else None,
        latency_p50_ms=histogram_percentile(latency, 50),
        latency_p95_ms=histogram_percentile(latency, 95),
        latency_p99_ms=histogram_percentile(latency, 99),
    )
