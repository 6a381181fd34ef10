"""The runs view, fed with events from the real aggregates over in-memory SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from agentledger.domain.conversation import Conversation
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.projections.runs import RunsProjection, get_run, list_runs


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in RunsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def fold(cursor: sqlite3.Cursor, events: Iterable[object]) -> None:
    projection = RunsProjection()
    for event in events:
        projection.apply(event, cursor)


def requested(task_id: str, agent: str = "echo", session_id: str | None = None) -> AgentRun:
    return AgentRun(
        task_id=task_id,
        agent=agent,
        prompt=f"prompt of {task_id}",
        session_id=session_id,
        metadata={"team": "qa"},
        usage_limits={},
        deadline=None,
        history_version=0,
    )


def with_tool_step(run: AgentRun) -> AgentRun:
    run.send_model_request({"kind": "request", "parts": []})
    run.receive_model_response({"kind": "response", "parts": []}, "test", 10, 3)
    run.start_tool_call("call-1", "add", {"a": 1, "b": 2})
    run.finish_tool_call("call-1", "add", 3)
    run.send_model_request({"kind": "request", "parts": []})
    run.receive_model_response({"kind": "response", "parts": []}, "test", 12, 4)
    return run


def test_a_run_is_running_then_completed_with_its_usage(cursor: sqlite3.Cursor) -> None:
    run = with_tool_step(requested("t-1", session_id="s-1"))
    fold(cursor, run.collect_events())

    live = get_run(cursor, run_id=str(run.id))
    assert live is not None
    assert live.status == "running"
    assert (live.requests, live.input_tokens, live.output_tokens) == (2, 22, 7)
    assert (live.tool_calls, live.steps, live.version) == (1, 2, run.version)
    assert live.finished_at is None
    assert live.metadata == {"team": "qa"}

    run.complete({"answer": 3}, cost_usd=0.25, duration_ms=42.0)
    fold(cursor, run.collect_events())

    done = get_run(cursor, task_id="t-1")
    assert done is not None
    assert done.status == "completed"
    assert done.output == {"answer": 3}
    assert (done.cost_usd, done.duration_ms) == (0.25, 42.0)
    assert (done.requests, done.input_tokens, done.output_tokens, done.tool_calls) == (
        2,
        22,
        7,
        1,
    )
    assert done.finished_at is not None and done.finished_at >= done.requested_at
    assert (done.agent, done.session_id, done.prompt) == ("echo", "s-1", "prompt of t-1")
    assert done.error_kind is None and not done.retryable


def test_a_failed_run_keeps_its_error(cursor: sqlite3.Cursor) -> None:
    run = requested("t-2")
    run.send_model_request({"kind": "request", "parts": []})
    run.fail("model_error", "the model said no", retryable=True, duration_ms=7.5)
    fold(cursor, run.collect_events())

    view = get_run(cursor, run_id=str(run.id))
    assert view is not None
    assert view.status == "failed"
    assert (view.error_kind, view.error_message, view.retryable) == (
        "model_error",
        "the model said no",
        True,
    )
    assert view.duration_ms == 7.5
    assert view.output is None


def test_a_rejected_task_is_a_row(cursor: sqlite3.Cursor) -> None:
    rejection = TaskRejection(
        key="t-3",
        task_id="t-3",
        agent="nope",
        subject="ledger.tasks.run.nope",
        error_kind="unknown_agent",
        reason="no agent named 'nope'",
        payload_excerpt="{}",
    )
    fold(cursor, rejection.collect_events())

    view = get_run(cursor, task_id="t-3")
    assert view is not None
    assert view.run_id == str(rejection.id)
    assert view.status == "rejected"
    assert (view.error_kind, view.error_message) == ("unknown_agent", "no agent named 'nope'")
    assert view.finished_at == view.requested_at


def test_list_runs_filters_and_pages_newest_first(cursor: sqlite3.Cursor) -> None:
    runs = [requested(f"t-{i}", agent="a" if i % 2 else "b", session_id="s") for i in range(5)]
    for run in runs:
        fold(cursor, run.collect_events())
    runs[0].complete("ok", cost_usd=None, duration_ms=1.0)
    fold(cursor, runs[0].collect_events())

    everything = list_runs(cursor)
    assert [v.task_id for v in everything] == ["t-4", "t-3", "t-2", "t-1", "t-0"]
    assert [v.task_id for v in list_runs(cursor, agent="a")] == ["t-3", "t-1"]
    assert [v.task_id for v in list_runs(cursor, status="completed")] == ["t-0"]
    assert [v.task_id for v in list_runs(cursor, agent="b", status="running")] == ["t-4", "t-2"]
    assert [v.task_id for v in list_runs(cursor, limit=2, offset=1)] == ["t-3", "t-2"]
    assert list_runs(cursor, session_id="other") == []
    with pytest.raises(ValueError, match="limit"):
        list_runs(cursor, limit=0)


def test_unknown_runs_and_missing_arguments(cursor: sqlite3.Cursor) -> None:
    assert get_run(cursor, run_id="nope") is None
    assert get_run(cursor, task_id="nope") is None
    with pytest.raises(ValueError, match="run_id or task_id"):
        get_run(cursor)


def test_applying_events_again_changes_nothing(cursor: sqlite3.Cursor) -> None:
    run = with_tool_step(requested("t-5"))
    run.complete("ok", cost_usd=0.1, duration_ms=3.0)
    events = run.collect_events()
    fold(cursor, events)
    before = cursor.execute("SELECT * FROM al_runs").fetchall()
    fold(cursor, events)
    assert cursor.execute("SELECT * FROM al_runs").fetchall() == before


def test_other_aggregates_are_ignored(cursor: sqlite3.Cursor) -> None:
    conversation = Conversation(session_id="s-9")
    conversation.record_turn("r", "t", "echo", [])
    fold(cursor, conversation.collect_events())
    assert list_runs(cursor) == []


def test_views_are_json_serialisable(cursor: sqlite3.Cursor) -> None:
    run = requested("t-6")
    run.complete({"nested": [1, "two"]}, cost_usd=None, duration_ms=1.0)
    fold(cursor, run.collect_events())
    view = get_run(cursor, task_id="t-6")
    assert view is not None
    data: dict[str, Any] = view.model_dump(mode="json")
    assert data["output"] == {"nested": [1, "two"]}
    assert data["requested_at"].endswith("Z") or data["requested_at"].endswith("+00:00")


def test_a_batch_folds_like_one_event_at_a_time(cursor: sqlite3.Cursor) -> None:
    done = with_tool_step(requested("t-7", session_id="s"))
    done.complete({"answer": 3}, cost_usd=0.5, duration_ms=9.0)
    failed = requested("t-8")
    failed.send_model_request({})
    failed.fail("model_error", "no", retryable=True, duration_ms=2.0)
    rejection = TaskRejection(
        key="t-9",
        task_id="t-9",
        agent=None,
        subject="ledger.tasks.run.x",
        error_kind="invalid_payload",
        reason="bad",
        payload_excerpt="{}",
    )
    in_flight = with_tool_step(requested("t-10"))
    events = [
        *done.collect_events(),
        *failed.collect_events(),
        *rejection.collect_events(),
        *in_flight.collect_events(),
    ]
    fold(cursor, events)
    expected = cursor.execute("SELECT * FROM al_runs ORDER BY run_id").fetchall()
    cursor.execute("DELETE FROM al_runs")

    projection = RunsProjection()
    projection.apply_batch(events[:5], cursor)
    projection.apply_batch(events[3:], cursor)  # overlapping: applied events are skipped
    assert cursor.execute("SELECT * FROM al_runs ORDER BY run_id").fetchall() == expected
    projection.apply_batch(events, cursor)
    assert cursor.execute("SELECT * FROM al_runs ORDER BY run_id").fetchall() == expected


def test_a_paused_run_is_listed_as_paused_until_resolved(cursor: sqlite3.Cursor) -> None:
    run = with_tool_step(requested("t-pause"))
    run.start_tool_call("call-2", "pay", {"amount": 5})
    run.record_tool_decision("call-2", "pay", "unknown_after_crash", {"on_crash": "pause"}, 0.0)
    run.pause("call-2", "pay", "its effect is unknown")
    fold(cursor, run.collect_events())
    assert [r.task_id for r in list_runs(cursor, status="paused")] == ["t-pause"]
    run.resolve_tool_call("result", "paid by phone", "alice")
    fold(cursor, run.collect_events())
    assert get_run(cursor, task_id="t-pause").status == "running"  # type: ignore[union-attr]
    run.finish_tool_call("call-2", "pay", "paid by phone")
    run.complete("done", None, 12.0)
    fold(cursor, run.collect_events())
    view = get_run(cursor, task_id="t-pause")
    assert view is not None and view.status == "completed" and view.tool_calls == 2
