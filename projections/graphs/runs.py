"""The graph_runs view: one row per graph run (status, the node it is at, the path it
took, what it waits for) and one row per step execution (when it ran, how long it took),
rebuildable from the `GraphRun` events like every view.

A run that dispatched child tasks (`call_agents`) is `waiting` until the last of them
has ended (`children_waiting` counts the ones still out), then `running` again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.graphs.run import GraphRun, GraphRunStatus
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

__all__ = [
    "GraphRunView",
    "GraphRunsProjection",
    "GraphStepView",
    "get_graph_run",
    "list_graph_runs",
]

_COLUMNS = (
    "run_id",
    "task_id",
    "graph",
    "status",
    "current_node",
    "path",
    "branches",
    "steps",
    "paused_node",
    "paused_for",
    "children_waiting",
    "output",
    "error_kind",
    "error_message",
    "parent_run_id",
    "started_at",
    "finished_at",
    "duration_ms",
    "version",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM al_graph_runs"
_STEP_COLUMNS = (
    "run_id",
    "seq",
    "step_key",
    "node_id",
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "error",
)


class GraphStepView(BaseModel):
    """One live execution of a step (a step re-run after a crash has two rows)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    step_key: str
    node_id: str
    status: str
    """running, finished or failed."""
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    error: str | None


class GraphRunView(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    task_id: str
    graph: str
    status: GraphRunStatus
    current_node: str | None
    """The node of the step running or waiting now (None once the run ended)."""
    path: list[str]
    """Node ids of finished steps and decisions' destinations, in order."""
    branches: dict[str, str]
    """Decision node id -> the node its last decision went to."""
    steps: int
    paused_node: str | None
    paused_for: Any
    """The prompt of the input the run waits for."""
    children_waiting: int
    """Child tasks dispatched (`call_agents`) whose outcome is not recorded yet."""
    output: Any
    error_kind: str | None
    error_message: str | None
    parent_run_id: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    version: int
    step_runs: list[GraphStepView] = []


class GraphRunsProjection(Projection):
    """Folds `GraphRun` events into `al_graph_runs` and `al_graph_steps`."""

    name: ClassVar[str] = "graph_runs"
    version: ClassVar[int] = 2
    """2: the `waiting` status and `children_waiting`."""
    tables: ClassVar[tuple[str, ...]] = ("al_graph_runs", "al_graph_steps")
    ddl: ClassVar[tuple[str, ...]] = (
        """CREATE TABLE IF NOT EXISTS al_graph_runs (
            run_id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            graph TEXT NOT NULL,
            status TEXT NOT NULL,
            current_node TEXT,
            path TEXT NOT NULL,
            branches TEXT NOT NULL,
            steps INTEGER NOT NULL,
            paused_node TEXT,
            paused_for TEXT,
            children_waiting INTEGER NOT NULL,
            output TEXT,
            error_kind TEXT,
            error_message TEXT,
            parent_run_id TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms DOUBLE PRECISION,
            version INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS al_graph_runs_started_idx ON al_graph_runs (started_at)",
        "CREATE INDEX IF NOT EXISTS al_graph_runs_graph_idx ON al_graph_runs (graph, started_at)",
        "CREATE INDEX IF NOT EXISTS al_graph_runs_task_idx ON al_graph_runs (task_id)",
        """CREATE TABLE IF NOT EXISTS al_graph_steps (
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            step_key TEXT NOT NULL,
            node_id TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms DOUBLE PRECISION,
            error TEXT,
            PRIMARY KEY (run_id, seq)
        )""",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        groups = group_by_aggregate(events, GraphRun.Event)
        if not groups:
            return
        rows = select_rows(cursor, "al_graph_runs", _COLUMNS, groups)
        for run_id, run_events in groups.items():
            row = rows.get(run_id)
            changed = False
            for event in run_events:
                if row is not None and row["version"] >= event.originator_version:
                    continue  # folded before (a re-applied event)
                row = _fold(row, run_id, event, cursor, self.sealer)
                changed = True
            if changed and row is not None:
                cursor.execute(_UPSERT, tuple(row[c] for c in _COLUMNS))


_UPSERT = upsert_sql("al_graph_runs", _COLUMNS, ("run_id",))
_STEP_UPSERT = upsert_sql("al_graph_steps", _STEP_COLUMNS, ("run_id", "seq"))


def _fold(
    row: dict[str, Any] | None, run_id: str, event: Any, cursor: ViewCursor, sealer: Sealer
) -> dict[str, Any] | None:
    at = iso(event.timestamp)
    if isinstance(event, GraphRun.GraphStarted):
        return {
            "run_id": run_id,
            "task_id": view_key(event.task_id),
            "graph": view_key(event.graph),
            "status": "running",
            "current_node": None,
            "path": "[]",
            "branches": "{}",
            "steps": 0,
            "paused_node": None,
            "paused_for": None,
            "children_waiting": 0,
            "output": None,
            "error_kind": None,
            "error_message": None,
            "parent_run_id": event.parent_run_id,
            "started_at": at,
            "finished_at": None,
            "duration_ms": None,
            "version": event.originator_version,
        }
    if row is None:
        return None
    row = dict(row, version=event.originator_version)
    seq = event.originator_version
    if isinstance(event, GraphRun.StepStarted):
        row.update(current_node=event.node_id, steps=row["steps"] + 1)
        cursor.execute(
            _STEP_UPSERT,
            (run_id, seq, view_key(event.key), event.node_id, "running", at, None, None, None),
        )
    elif isinstance(event, GraphRun.StepFinished):
        row["path"] = dumps([*loads(row["path"]), event.node_id])
        _end_step(cursor, run_id, event.key, ("finished", at, event.duration_ms, None))
    elif isinstance(event, GraphRun.StepFailed):
        _end_step(cursor, run_id, event.key, ("failed", at, None, event.error))
    elif isinstance(event, GraphRun.BranchTaken):
        row["branches"] = dumps({**loads(row["branches"]), event.node_id: event.destination})
    elif isinstance(event, GraphRun.GraphPaused):
        row.update(
            status="paused",
            current_node=event.node_id,
            paused_node=event.node_id,
            paused_for=sealer.seal(dumps(event.prompt)),
        )
    elif isinstance(event, GraphRun.GraphResumed):
        row.update(status="running", paused_node=None, paused_for=None)
    elif isinstance(event, GraphRun.ChildrenDispatched):
        row.update(
            status="waiting",
            current_node=event.node_id,
            children_waiting=row["children_waiting"] + len(event.children),
        )
    elif isinstance(event, GraphRun.ChildFinished):
        # Recorded once per awaited child (the aggregate refuses any other), so the run
        # runs again when none is out, as `GraphRun` does.
        waiting = max(row["children_waiting"] - 1, 0)
        row.update(children_waiting=waiting, status="running" if waiting == 0 else "waiting")
    elif isinstance(event, GraphRun.GraphCompleted):
        row.update(
            status="completed",
            current_node=None,
            output=sealer.seal(dumps(event.output)),
            finished_at=at,
            duration_ms=event.duration_ms,
        )
    elif isinstance(event, GraphRun.GraphFailed):
        row.update(
            status="failed",
            current_node=None,
            paused_node=None,
            paused_for=None,
            children_waiting=0,
            error_kind=event.error_kind,
            error_message=event.message,
            finished_at=at,
            duration_ms=event.duration_ms,
        )
    return row


def _end_step(cursor: ViewCursor, run_id: str, key: str, values: tuple[Any, ...]) -> None:
    """Close the latest execution of step `key` (status, finished_at, duration, error)."""
    cursor.execute(
        "UPDATE al_graph_steps SET status = ?, finished_at = ?, duration_ms = ?, error = ?"
        " WHERE run_id = ? AND seq = (SELECT MAX(seq) FROM al_graph_steps"
        " WHERE run_id = ? AND step_key = ?)",
        (*values, run_id, run_id, view_key(key)),
    )


def _view(row: tuple[Any, ...], sealer: Sealer) -> GraphRunView:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["path"] = loads(data["path"])
    data["branches"] = loads(data["branches"])
    for column in ("paused_for", "output"):
        value = data[column]
        data[column] = None if value is None else loads(sealer.unseal(value))
    return GraphRunView.model_validate(data)


def get_graph_run(
    cursor: ViewCursor,
    *,
    run_id: str | None = None,
    task_id: str | None = None,
    with_steps: bool = True,
    sealer: Sealer = PLAIN,
) -> GraphRunView | None:
    """One graph run by run id or task id, with its step executions."""
    found = select_by_run_or_task(
        cursor, _SELECT, run_id=run_id, task_id=task_id, newest="started_at", query="get_graph_run"
    )
    if found is None:
        return None
    view = _view(found, sealer)
    if not with_steps:
        return view
    cursor.execute(
        f"SELECT {', '.join(_STEP_COLUMNS[1:])} FROM al_graph_steps WHERE run_id = ? ORDER BY seq",
        (view.run_id,),
    )
    steps = [
        GraphStepView.model_validate(dict(zip(_STEP_COLUMNS[1:], r, strict=True)))
        for r in cursor.fetchall()
    ]
    return view.model_copy(update={"step_runs": steps})


def list_graph_runs(
    cursor: ViewCursor,
    *,
    graph: str | None = None,
    status: GraphRunStatus | None = None,
    limit: int = 50,
    offset: int = 0,
    sealer: Sealer = PLAIN,
) -> list[GraphRunView]:
    """Graph runs matching the filters, newest first (without their step rows)."""
    rows = select_page(
        cursor,
        _SELECT,
        (("graph", optional_key(graph)), ("status", status)),
        order_by="started_at DESC, run_id DESC",
        limit=limit,
        offset=offset,
        query="list_graph_runs",
    )
    return [_view(row, sealer) for row in rows]
