"""The workflows view, fed with the events of workflows the real executor recorded
(tests/support/workflows.py), over in-memory SQLite: statuses, children, messages, and
the same rows whichever way the events are batched."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.projections.orchestration.workflows import (
    WorkflowsProjection,
    get_workflow,
    list_workflows,
    workflow_messages_of,
)
from support.sample_graphs import fan_graph, recorded
from support.workflows import completed, failing, recorded_workflow

pytestmark = pytest.mark.asyncio

TWO = [["writer", "draft it"], ["critic", "find faults"]]


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in WorkflowsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def rows(cursor: sqlite3.Cursor) -> dict[str, list[Any]]:
    return {
        table: sorted(cursor.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in WorkflowsProjection.tables
    }


async def test_a_completed_workflow_its_children_and_messages(cursor: sqlite3.Cursor) -> None:
    run, events = await recorded_workflow(TWO, task_id="wf-ok")
    WorkflowsProjection().apply_batch(events, cursor)
    view = get_workflow(cursor, task_id="wf-ok")
    assert view is not None and view == get_workflow(cursor, run_id=str(run.id))
    assert (view.run_id, view.graph, view.status) == (str(run.id), "relay", "completed")
    assert (view.children_dispatched, view.children_finished, view.children_failed) == (3, 3, 0)
    assert view.message_count == 6 and view.duration_ms == 12.5
    assert view.finished_at is not None and view.started_at < view.finished_at
    children = view.children
    assert [(c.seq, c.agent, c.node_id, c.status) for c in children] == [
        (1, "writer", "research", "completed"),
        (2, "critic", "research", "completed"),
        (3, "editor", "edit", "completed"),
    ]
    assert children[0].output == "writer did: draft it" and children[0].error is None
    assert children[2].output == run.output
    assert {c.duration_ms for c in children} == {5.0}
    assert all(c.kind == "request" and c.message_id.startswith("req-") for c in children)
    assert children[0].step_key == children[1].step_key != children[2].step_key
    assert all(c.finished_at is not None and c.dispatched_at <= c.finished_at for c in children)
    # The messages are exactly the ones `workflow_messages` derives from the events.
    messages = workflow_messages_of(cursor, "wf-ok")
    assert [m.seq for m in messages] == [1, 2, 3, 4, 5, 6]
    assert [m.message() for m in messages] == workflow_messages(events)
    assert workflow_messages_of(cursor, "wf-ok", limit=2, offset=3) == messages[3:5]
    assert workflow_messages_of(cursor, "nobody") == []


async def test_statuses_running_waiting_running_completed(cursor: sqlite3.Cursor) -> None:
    _, events = await recorded_workflow(TWO, task_id="wf-s")
    projection = WorkflowsProjection()
    seen = []
    for event in events:
        projection.apply(event, cursor)
        view = get_workflow(cursor, task_id="wf-s", with_children=False)
        seen.append((type(event).__name__, None if view is None else view.status))
    # Not a workflow before its first dispatch: its start waits in the pending table.
    assert seen[:2] == [("GraphStarted", None), ("StepStarted", None)]
    assert seen[2:6] == [
        ("ChildrenDispatched", "waiting"),
        ("ChildFinished", "waiting"),
        ("ChildFinished", "running"),
        ("StepStarted", "running"),
    ]
    assert seen[8:10] == [("ChildrenDispatched", "waiting"), ("ChildFinished", "running")]
    assert seen[-1] == ("GraphCompleted", "completed")
    assert rows(cursor)["al_workflow_pending"] == []


async def test_a_failed_child_is_counted_and_shows_its_error(cursor: sqlite3.Cursor) -> None:
    _, events = await recorded_workflow(TWO, failing("critic"), task_id="wf-f")
    WorkflowsProjection().apply_batch(events, cursor)
    view = get_workflow(cursor, task_id="wf-f")
    assert view is not None and view.status == "completed"  # the graph decides
    assert (view.children_dispatched, view.children_finished, view.children_failed) == (3, 3, 1)
    critic = next(c for c in view.children if c.agent == "critic")
    assert (critic.status, critic.output, critic.duration_ms) == ("failed", None, 7.0)
    assert critic.error == {"kind": "model_error", "message": "critic is down", "retryable": False}
    response = next(m for m in workflow_messages_of(cursor, "wf-f") if m.sender == "critic")
    assert response.kind == "response" and response.content == {"error": critic.error}
    assert [w.task_id for w in list_workflows(cursor, status="completed")] == ["wf-f"]


async def test_a_cancelled_workflow_marks_its_unfinished_children_cancelled(
    cursor: sqlite3.Cursor,
) -> None:
    run, events = await recorded_workflow(
        TWO, lambda c: completed(c) if c["agent"] == "writer" else None, task_id="wf-c"
    )
    projection = WorkflowsProjection()
    projection.apply_batch(events, cursor)
    assert [w.task_id for w in list_workflows(cursor, status="waiting")] == ["wf-c"]
    run.fail("cancelled", "cancelled by request", 40.0)
    projection.apply_batch(list(run.collect_events()), cursor)
    view = get_workflow(cursor, task_id="wf-c")
    assert view is not None
    assert (view.status, view.error_kind, view.error_message, view.duration_ms) == (
        "failed",
        "cancelled",
        "cancelled by request",
        40.0,
    )
    assert [(c.agent, c.status) for c in view.children] == [
        ("writer", "completed"),
        ("critic", "cancelled"),
    ]
    assert view.children[1].finished_at is not None and view.message_count == 3


async def test_a_graph_run_that_dispatches_nothing_is_no_workflow(cursor: sqlite3.Cursor) -> None:
    _, events, _ = await recorded(fan_graph, "fan", 2)
    projection = WorkflowsProjection()
    projection.apply_batch(events[:3], cursor)
    assert len(rows(cursor)["al_workflow_pending"]) == 1  # under way: it might dispatch
    projection.apply_batch(events[3:], cursor)
    assert rows(cursor) == {table: [] for table in WorkflowsProjection.tables}
    assert get_workflow(cursor, task_id="task-fan") is None and list_workflows(cursor) == []


async def test_any_batching_and_re_applying_give_the_same_rows(cursor: sqlite3.Cursor) -> None:
    logs = [
        (await recorded_workflow(TWO, task_id="wf-a"))[1],
        (await recorded_workflow(TWO, failing("writer", "editor"), task_id="wf-b"))[1],
        (await recorded(fan_graph, "fan", 7))[1],
        (await recorded_workflow(TWO, lambda c: None, task_id="wf-d"))[1],
    ]
    # Interleaved as a log would hold them (each run's events in order).
    log: list[Any] = []
    rng = random.Random(11)
    queues = [list(events) for events in logs]
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        log.append(queue.pop(0))
    projection = WorkflowsProjection()
    projection.apply_batch(log, cursor)
    one_batch = rows(cursor)
    assert len(one_batch["al_workflows"]) == 3 and len(one_batch["al_workflow_messages"]) == 14
    for size in (1, 2, 5):
        for table in WorkflowsProjection.tables:
            cursor.execute(f"DELETE FROM {table}")
        for start in range(0, len(log), size):
            projection.apply_batch(log[start : start + size], cursor)
        assert rows(cursor) == one_batch, size
    projection.apply_batch(log, cursor)  # re-applied: no change
    assert rows(cursor) == one_batch
    projection.apply_batch(log[len(log) // 2 :], cursor)  # and a part of it again
    assert rows(cursor) == one_batch
    newest_first = [w.task_id for w in list_workflows(cursor)]
    assert sorted(newest_first) == ["wf-a", "wf-b", "wf-d"]
    assert [w.task_id for w in list_workflows(cursor, graph="relay", limit=1, offset=1)] == [
        newest_first[1]
    ]
    assert list_workflows(cursor, graph="fan") == []


async def test_content_is_sealed_and_bounded(cursor: sqlite3.Cursor) -> None:
    class Reversing:
        def seal(self, text: str) -> str:
            return "sealed:" + text[::-1]

        def unseal(self, text: str) -> str:
            return text.removeprefix("sealed:")[::-1]

    def huge(child: dict[str, Any]) -> dict[str, Any]:
        return {**completed(child), "output": "secret " + "x" * 40_000}

    sealer = Reversing()
    _, events = await recorded_workflow([["writer", "secret plan"]], huge, task_id="wf-h")
    WorkflowsProjection(sealer).apply_batch(events, cursor)
    stored = repr(rows(cursor))
    assert "secret" not in stored and "sealed:" in stored
    view = get_workflow(cursor, task_id="wf-h", sealer=sealer)
    assert view is not None
    output = view.children[0].output
    assert output["truncated"] is True and output["chars"] > 40_000
    assert output["preview"].startswith('"secret xxx')
    messages = workflow_messages_of(cursor, "wf-h", sealer=sealer)
    assert messages[0].content == "secret plan" and messages[1].content == output
