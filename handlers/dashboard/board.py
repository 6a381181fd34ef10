"""The dashboard's live board: per-agent figures, recent runs, graph runs and alerts,
read once from the views and then kept current by folding the events the relay
publishes (`<prefix>.events.<aggregate>.<event>`, each with its notification id).

No database is polled. Each part of the board remembers the position of the view it
was read from (its tracking row, read in the same snapshot as its rows:
`agentledger.handlers.dashboard.snapshot`) and folds only events after it, so an event
is counted once whether it was published before the dashboard subscribed (it is in what
was read) or after (it is folded). A record whose run already holds its version (a
relay that restarted republishes what it had published) is skipped.

Per-agent figures follow the metrics view's rules (`agentledger.projections.metrics`):
the same counters, the cost in nano-dollars, the latency percentiles from the same
histogram (the view's buckets, then each finished run's duration in its bucket), and
`metrics_of` computes both. The events of a run the board never saw requested (a run
older than what it read, still going) cannot be put to an agent and are not counted;
the board reads every running and paused run at start (`TRACKED_RUNS` at most), so only
a longer backlog than that drifts, until the page is reloaded.

`apply` is pure (no I/O, no clock): it returns what changed, for the feed to send.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentledger.domain.stats import HistogramBucket, bucket_of
from agentledger.projections.base import optional_key, view_key
from agentledger.projections.metrics import COUNTERS, UNKNOWN_AGENT, metrics_of, nano_usd

__all__ = [
    "ALERT_ROWS",
    "GRAPH_ROWS",
    "PARTS",
    "RUN_ROWS",
    "TRACKED_RUNS",
    "Board",
    "Change",
    "graph_row",
    "preview",
]

PARTS = {"runs": "runs", "metrics": "metrics", "graphs": "graph_runs", "alerts": "alerts"}
"""Each part of the board -> the view (projection) it is read from."""
RUN_ROWS = 500
"""Runs kept for the page (the newest requested)."""
GRAPH_ROWS = 200
ALERT_ROWS = 200
TRACKED_RUNS = 20_000
"""Runs whose agent the board remembers to count their later events."""
PREVIEW_CHARS = 240
"""Prompts, outputs and errors are cut to this for the live list (the run's page has
them whole)."""

ChangeKind = Literal["run", "agent", "graph", "alert"]


@dataclass(frozen=True, kw_only=True)
class Change:
    """Something the page shows changed: its kind, key and new value."""

    kind: ChangeKind
    key: str
    value: dict[str, Any]


@dataclass(kw_only=True)
class _Tally:
    """One agent's counters and latency histogram (the metrics view's)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    buckets: dict[int, HistogramBucket] = field(default_factory=dict)

    def finished(self, duration_ms: float) -> None:
        try:
            bucket = bucket_of(duration_ms)
        except ValueError:  # not finite: adds no latency (as in the view)
            return
        old = self.buckets.get(bucket)
        self.buckets[bucket] = (
            HistogramBucket(count=1, low=duration_ms, high=duration_ms)
            if old is None
            else HistogramBucket(
                count=old.count + 1, low=min(old.low, duration_ms), high=max(old.high, duration_ms)
            )
        )


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str | None:
    """`value` as at most `limit` characters (JSON unless text), None for None."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(kw_only=True)
class Board:
    """See the module docstring. Built by `read_board` (or empty, for tests)."""

    positions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    """Per part: the notification id its rows were read at."""
    tallies: dict[str, _Tally] = field(default_factory=dict)
    tracked: OrderedDict[str, list[Any]] = field(default_factory=OrderedDict)
    """run id -> [agent key, version] (the metrics view's per-run state)."""
    runs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    graphs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    alerts: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    folded: int = 0
    """Records folded (in some part) since the board was read."""

    def state(self) -> dict[str, Any]:
        """Everything the page starts from."""
        return {
            "positions": dict(self.positions),
            "agents": [self.figures(agent) for agent in sorted(self.tallies)],
            "runs": list(reversed(self.runs.values())),
            "graphs": list(reversed(self.graphs.values())),
            "alerts": sorted(self.alerts.values(), key=lambda a: a["changed_at"], reverse=True),
        }

    def figures(self, agent: str) -> dict[str, Any]:
        tally = self.tallies[agent]
        latency = [tally.buckets[b] for b in sorted(tally.buckets)]
        return metrics_of(agent, tally.counts, latency).model_dump(mode="json")

    def apply(self, record: Mapping[str, Any]) -> list[Change]:
        """Fold one relayed event record; what changed."""
        nid = int(record["notification_id"])
        kind = record["aggregate_type"]
        changes: list[Change] = []
        if kind in ("AgentRun", "TaskRejection"):
            if nid > self.positions["metrics"]:
                agent = self._count(record)
                if agent is not None:
                    changes.append(Change(kind="agent", key=agent, value=self.figures(agent)))
            if nid > self.positions["runs"]:
                row = self._run(record)
                if row is not None:
                    changes.append(Change(kind="run", key=row["run_id"], value=dict(row)))
        elif kind == "GraphRun" and nid > self.positions["graphs"]:
            row = self._graph(record)
            if row is not None:
                changes.append(Change(kind="graph", key=row["run_id"], value=dict(row)))
        elif kind == "Alert" and nid > self.positions["alerts"]:
            row = self._alert(record)
            if row is not None:
                changes.append(Change(kind="alert", key=row["alert_id"], value=dict(row)))
        if changes:
            self.folded += 1
        return changes

    # -- metrics ---------------------------------------------------------------

    def _count(self, record: Mapping[str, Any]) -> str | None:
        """The metrics view's fold of one event; the agent whose figures changed."""
        run_id, name, data = record["aggregate_id"], record["name"], record["data"]
        version = int(record["version"])
        known = self.tracked.get(run_id)
        if name in ("RunRequested", "TaskRejected"):
            if known is not None:
                return None
            if name == "RunRequested":
                agent, counter = view_key(data["agent"]), "runs"
            else:
                agent, counter = optional_key(data.get("agent")) or UNKNOWN_AGENT, "rejected"
            self.tally(agent).counts[counter] += 1
            self.track(run_id, [agent, version])
            return agent
        if known is None or version <= known[1]:
            return None
        known[1] = version
        agent = str(known[0])
        counts = self.tally(agent).counts
        if name == "ModelResponseReceived":
            counts["requests"] += 1
            counts["input_tokens"] += int(data["input_tokens"])
            counts["output_tokens"] += int(data["output_tokens"])
        elif name == "ToolCallStarted":
            counts["tool_calls"] += 1
        elif name in ("RunCompleted", "RunFailed"):
            if name == "RunCompleted":
                counts["completed"] += 1
                counts["cost_nusd"] += nano_usd(data.get("cost_usd"))
            else:
                counts["failed"] += 1
            self.tally(agent).finished(float(data["duration_ms"]))
        else:
            return None
        return agent

    def tally(self, agent: str) -> _Tally:
        """The agent's counters and histogram (made empty on first sight)."""
        tally = self.tallies.get(agent)
        if tally is None:
            tally = self.tallies[agent] = _Tally()
        return tally

    def track(self, run_id: str, state: list[Any]) -> None:
        """Remember a run's [agent, version] to count its later events (bounded)."""
        self.tracked[run_id] = state
        while len(self.tracked) > TRACKED_RUNS:
            self.tracked.popitem(last=False)

    # -- runs ------------------------------------------------------------------

    def _run(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        run_id, name, data = record["aggregate_id"], record["name"], record["data"]
        version, at = int(record["version"]), record["timestamp"]
        row = self.runs.get(run_id)
        if name in ("RunRequested", "TaskRejected"):
            if row is not None:
                return None
            rejected = name == "TaskRejected"
            row = {
                "run_id": run_id,
                "task_id": data.get("task_id"),
                "agent": data.get("agent"),
                "session_id": data.get("session_id"),
                "status": "rejected" if rejected else "running",
                "prompt": None if rejected else preview(data.get("prompt")),
                "output": None,
                "error_kind": data.get("error_kind") if rejected else None,
                "error_message": preview(data.get("reason")) if rejected else None,
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "tool_calls": 0,
                "cost_usd": None,
                "requested_at": at,
                "finished_at": at if rejected else None,
                "duration_ms": None,
            }
            self.runs[run_id] = row
            while len(self.runs) > RUN_ROWS:
                self.runs.popitem(last=False)
        elif row is None or version <= row["version"]:
            return None
        elif name == "ModelResponseReceived":
            row["requests"] += 1
            row["input_tokens"] += int(data["input_tokens"])
            row["output_tokens"] += int(data["output_tokens"])
        elif name == "ToolCallStarted":
            row["tool_calls"] += 1
        elif name == "RunPaused":
            row["status"] = "paused"
        elif name == "ToolCallResolved":
            row["status"] = "running"
        elif name == "RunCompleted":
            row.update(
                status="completed",
                output=preview(data.get("output")),
                requests=int(data["requests"]),
                input_tokens=int(data["input_tokens"]),
                output_tokens=int(data["output_tokens"]),
                tool_calls=int(data["tool_calls"]),
                cost_usd=data.get("cost_usd"),
                finished_at=at,
                duration_ms=data["duration_ms"],
            )
        elif name == "RunFailed":
            row.update(
                status="failed",
                error_kind=data["error_kind"],
                error_message=preview(data["message"]),
                finished_at=at,
                duration_ms=data["duration_ms"],
            )
        row.update(version=version, committed_at=at, notification_id=record["notification_id"])
        return row

    # -- graph runs ------------------------------------------------------------

    def _graph(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        run_id, name, data = record["aggregate_id"], record["name"], record["data"]
        version, at = int(record["version"]), record["timestamp"]
        row = self.graphs.get(run_id)
        if name == "GraphStarted":
            if row is not None:
                return None
            row = self.graphs[run_id] = graph_row(
                run_id=run_id, task_id=data["task_id"], graph=data["graph"], started_at=at
            )
            while len(self.graphs) > GRAPH_ROWS:
                self.graphs.popitem(last=False)
        elif row is None or version <= row["version"]:
            return None
        elif name == "StepStarted":
            row.update(current_node=data["node_id"], steps=row["steps"] + 1)
        elif name == "GraphPaused":
            row.update(status="paused", current_node=data["node_id"])
        elif name == "GraphResumed":
            row["status"] = "running"
        elif name == "ChildrenDispatched":
            row.update(
                status="waiting",
                workflow=True,
                current_node=data["node_id"],
                children_waiting=row["children_waiting"] + len(data["children"]),
            )
        elif name == "ChildFinished":
            waiting = max(row["children_waiting"] - 1, 0)
            row.update(children_waiting=waiting, status="running" if waiting == 0 else "waiting")
        elif name in ("GraphCompleted", "GraphFailed"):
            row.update(
                status="completed" if name == "GraphCompleted" else "failed",
                current_node=None,
                error_kind=data.get("error_kind"),
                finished_at=at,
                duration_ms=data["duration_ms"],
            )
        row.update(version=version, committed_at=at)
        return row

    # -- alerts ----------------------------------------------------------------

    def _alert(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        alert_id, name, data = record["aggregate_id"], record["name"], record["data"]
        version, at = int(record["version"]), record["timestamp"]
        row = self.alerts.get(alert_id)
        if name == "AlertOpened":
            if row is not None:
                return None
            row = self.alerts[alert_id] = {
                "alert_id": alert_id,
                "rule": data["rule"],
                "agent": data["agent"],
                "state": "cleared",
                "metric": None,
                "window": None,
                "value": None,
                "threshold": None,
                "samples": 0,
                "raised_at": None,
                "cleared_at": None,
                "changed_at": at,
                "times_raised": 0,
            }
            while len(self.alerts) > ALERT_ROWS:
                self.alerts.popitem(last=False)
        elif row is None or version <= row["version"]:
            return None
        elif name in ("AlertRaised", "AlertCleared"):
            raised = name == "AlertRaised"
            row.update(
                state="raised" if raised else "cleared",
                metric=data["metric"],
                window=data["window"],
                value=data["value"],
                threshold=data["threshold"],
                samples=data["samples"],
                raised_at=at if raised else row["raised_at"],
                cleared_at=row["cleared_at"] if raised else at,
                changed_at=at,
                times_raised=row["times_raised"] + (1 if raised else 0),
            )
        row["version"] = version
        return row


def graph_row(*, run_id: str, task_id: str, graph: str, started_at: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "task_id": task_id,
        "graph": graph,
        "status": "running",
        "current_node": None,
        "steps": 0,
        "children_waiting": 0,
        "workflow": False,
        "error_kind": None,
        "started_at": started_at,
        "finished_at": None,
        "duration_ms": None,
        "version": 0,
    }
