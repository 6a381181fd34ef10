"""The graph_runs view, fed with events of real executor runs over in-memory SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from agentledger.projections.graphs.runs import (
    GraphRunsProjection,
    get_graph_run,
    list_graph_runs,
)
from support.sample_graphs import approval_graph, fan_graph, recorded
from support.workflows import completed, recorded_workflow

pytestmark = pytest.mark.asyncio


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in GraphRunsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def rows(cursor: sqlite3.Cursor) -> list[Any]:
    return [
        *cursor.execute("SELECT * FROM al_graph_runs ORDER BY run_id").fetchall(),
        *cursor.execute("SELECT * FROM al_graph_steps ORDER BY run_id, seq").fetchall(),
    ]


async def test_a_completed_run_shows_its_path_branches_and_step_times(
    cursor: sqlite3.Cursor,
) -> None:
    run, events, output = await recorded(fan_graph, "fan", 2)
    GraphRunsProjection().apply_batch(events, cursor)
    view = get_graph_run(cursor, task_id="task-fan")
    assert view is not None
    assert (view.status, view.current_node, view.output) == ("completed", None, output)
    assert view.path[:3] == ["ingest", "size", "small"]
    assert view.path[-1] == "finish"
    assert view.branches == {"route": "small"}
    assert view.steps == len(view.step_runs) == len(view.path)
    assert all(s.status == "finished" and s.duration_ms is not None for s in view.step_runs)
    assert [r.run_id for r in list_graph_runs(cursor, graph="fan", status="completed")] == [
        str(run.id)
    ]


async def test_a_paused_run_shows_what_it_waits_for(cursor: sqlite3.Cursor) -> None:
    _, events, _ = await recorded(approval_graph, "approval", "the plan")
    GraphRunsProjection().apply_batch(events, cursor)
    view = get_graph_run(cursor, task_id="task-approval")
    assert view is not None
    assert (view.status, view.paused_node, view.current_node) == ("paused", "approve", "approve")
    assert view.paused_for == {"question": "approve 'draft of the plan'?"}
    assert view.path == ["draft"]
    assert [s.status for s in view.step_runs] == ["finished", "running"]


async def test_folding_event_by_event_and_again_equals_one_batch(cursor: sqlite3.Cursor) -> None:
    _, events, _ = await recorded(fan_graph, "fan", 7)
    projection = GraphRunsProjection()
    projection.apply_batch(events, cursor)
    batch = rows(cursor)
    for table in GraphRunsProjection.tables:
        cursor.execute(f"DELETE FROM {table}")
    for event in events:
        projection.apply(event, cursor)
    projection.apply_batch(events, cursor)  # re-applied: no change
    assert rows(cursor) == batch


async def test_a_run_waits_while_its_children_run_and_runs_again_after_the_last(
    cursor: sqlite3.Cursor,
) -> None:
    """waiting from each `ChildrenDispatched` until the step's last `ChildFinished`, then
    running (two sequential dispatches), then completed."""
    _, events = await recorded_workflow([["a", "x"], ["b", "y"]], task_id="wf-g")
    projection = GraphRunsProjection()
    seen: list[tuple[str, str, int, str | None]] = []
    for event in events:
        projection.apply(event, cursor)
        view = get_graph_run(cursor, task_id="wf-g", with_steps=False)
        assert view is not None
        seen.append((type(event).__name__, view.status, view.children_waiting, view.current_node))
    assert seen[2:6] == [
        ("ChildrenDispatched", "waiting", 2, "research"),
        ("ChildFinished", "waiting", 1, "research"),
        ("ChildFinished", "running", 0, "research"),
        ("StepStarted", "running", 0, "research"),
    ]
    assert seen[8:10] == [
        ("ChildrenDispatched", "waiting", 1, "edit"),
        ("ChildFinished", "running", 0, "edit"),
    ]
    assert seen[-1] == ("GraphCompleted", "completed", 0, None)
    assert [r.task_id for r in list_graph_runs(cursor, status="completed")] == ["wf-g"]


async def test_a_run_cancelled_while_waiting_ends_failed_with_no_child_waited_for(
    cursor: sqlite3.Cursor,
) -> None:
    run, events = await recorded_workflow(
        [["a", "x"], ["b", "y"]], lambda c: completed(c) if c["agent"] == "a" else None
    )
    projection = GraphRunsProjection()
    projection.apply_batch(events, cursor)
    view = get_graph_run(cursor, task_id="wf-1")
    assert view is not None and (view.status, view.children_waiting) == ("waiting", 1)
    assert [r.task_id for r in list_graph_runs(cursor, status="waiting")] == ["wf-1"]
    run.fail("cancelled", "cancelled by request", 3.0)
    projection.apply_batch(list(run.collect_events()), cursor)
    view = get_graph_run(cursor, task_id="wf-1")
    assert view is not None
    assert (view.status, view.error_kind, view.children_waiting) == ("failed", "cancelled", 0)
