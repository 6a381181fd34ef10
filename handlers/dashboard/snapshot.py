"""The dashboard's board as the views hold it now: one snapshot read of the runs, metrics,
graph_runs, workflows and alerts views, each part with its view's tracking position
(read in the same snapshot, so rows and positions agree: see
`agentledger.handlers.dashboard.board`)."""

from __future__ import annotations

from typing import Any

from agentledger.handlers.dashboard.board import (
    ALERT_ROWS,
    GRAPH_ROWS,
    PARTS,
    RUN_ROWS,
    TRACKED_RUNS,
    Board,
    graph_row,
    preview,
)
from agentledger.infra.view_store import ViewStore
from agentledger.projections.base import iso, view_key
from agentledger.projections.graphs.runs import list_graph_runs
from agentledger.projections.metrics import COUNTERS, agent_metrics, latency_buckets, nano_usd
from agentledger.projections.monitoring import list_alerts
from agentledger.projections.orchestration import list_workflows
from agentledger.projections.runs import RunView, list_runs

__all__ = ["read_board"]


def _run_row(view: RunView) -> dict[str, Any]:
    return {
        "run_id": view.run_id,
        "task_id": view.task_id,
        "agent": view.agent,
        "session_id": view.session_id,
        "status": view.status,
        "prompt": preview(view.prompt),
        "output": preview(view.output),
        "error_kind": view.error_kind,
        "error_message": preview(view.error_message),
        "requests": view.requests,
        "input_tokens": view.input_tokens,
        "output_tokens": view.output_tokens,
        "tool_calls": view.tool_calls,
        "cost_usd": view.cost_usd,
        "requested_at": iso(view.requested_at),
        "finished_at": None if view.finished_at is None else iso(view.finished_at),
        "duration_ms": view.duration_ms,
        "version": view.version,
        "committed_at": None,
        "notification_id": None,
    }


def read_board(views: ViewStore) -> Board:
    """The board as the views hold it now, each part with its view's position (one
    snapshot read; blocking: call it off the event loop)."""
    board = Board()
    with views.snapshot() as cursor:
        positions = views.trackings(cursor, list(PARTS.values()))
        board.positions = {part: positions[view] for part, view in PARTS.items()}
        figures = agent_metrics(cursor, limit=1000)
        histograms = latency_buckets(cursor, [m.agent for m in figures])
        active = [
            *list_runs(cursor, status="running", limit=TRACKED_RUNS // 2, sealer=views.sealer),
            *list_runs(cursor, status="paused", limit=TRACKED_RUNS // 2, sealer=views.sealer),
        ]
        recent = list_runs(cursor, limit=RUN_ROWS // 2, sealer=views.sealer)
        graphs = list_graph_runs(cursor, limit=GRAPH_ROWS // 2, sealer=views.sealer)
        workflows = {w.run_id for w in list_workflows(cursor, limit=GRAPH_ROWS // 2)}
        alerts = [
            *list_alerts(cursor, state="raised", limit=ALERT_ROWS // 2),
            *list_alerts(cursor, state="cleared", limit=ALERT_ROWS // 2),
        ]
    for m in figures:
        tally = board.tally(m.agent)
        counts = m.model_dump()
        tally.counts = {c: int(counts.get(c, 0)) for c in COUNTERS}
        tally.counts["cost_nusd"] = nano_usd(m.cost_usd)
        tally.buckets = dict(histograms.get(m.agent, {}))
    for view in active:
        if view.agent is not None:
            board.track(view.run_id, [view_key(view.agent), 0])
    shown = {v.run_id: v for v in [*active, *recent]}
    for view in sorted(shown.values(), key=lambda v: (v.requested_at, v.run_id)):
        board.runs[view.run_id] = _run_row(view)
    for g in sorted(graphs, key=lambda g: (g.started_at, g.run_id)):
        row = graph_row(
            run_id=g.run_id, task_id=g.task_id, graph=g.graph, started_at=iso(g.started_at)
        )
        row.update(
            status=g.status,
            current_node=g.current_node,
            steps=g.steps,
            children_waiting=g.children_waiting,
            workflow=g.run_id in workflows,
            error_kind=g.error_kind,
            finished_at=None if g.finished_at is None else iso(g.finished_at),
            duration_ms=g.duration_ms,
            version=g.version,
        )
        board.graphs[g.run_id] = row
    for a in sorted(alerts, key=lambda a: a.changed_at):
        board.alerts[a.alert_id] = {
            **a.model_dump(mode="json"),
            "raised_at": None if a.raised_at is None else iso(a.raised_at),
            "cleared_at": None if a.cleared_at is None else iso(a.cleared_at),
            "changed_at": iso(a.changed_at),
            "version": 0,
        }
    return board
