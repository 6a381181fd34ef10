"""The dashboard's live board, fed with relay records of real aggregates' events: it
shows what the metrics view would (folded by the view's own projection over in-memory
SQLite), skips what it already read and what it already folded, and keeps graph runs
and alerts."""

from __future__ import annotations

import sqlite3
from typing import Any

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.monitoring.alert import Alert
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.domain.timeline import event_record
from agentledger.handlers.dashboard.board import Board
from agentledger.projections.metrics import MetricsProjection, agent_metrics


def _run(task_id: str, agent: str, *, fail: bool = False, duration_ms: float = 12.5) -> list[Any]:
    run = AgentRun(
        task_id=task_id,
        agent=agent,
        prompt=f"<b>{task_id}</b>",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    run.send_model_request({"kind": "request", "parts": []})
    run.receive_model_response({"kind": "response", "parts": []}, "test", 10, 3)
    run.start_tool_call("call-1", "add", {"a": 1})
    run.finish_tool_call("call-1", "add", 2)
    if fail:
        run.fail("tool_error", "it broke", False, duration_ms)
    else:
        run.complete("done", 0.000123, duration_ms)
    return list(run.collect_events())


def _records(events: list[Any], first_id: int = 1) -> list[dict[str, Any]]:
    return [
        {"notification_id": first_id + i, **event_record(e).as_dict()} for i, e in enumerate(events)
    ]


def _view_metrics(events: list[Any]) -> list[dict[str, Any]]:
    connection = sqlite3.connect(":memory:")
    cursor = connection.cursor()
    projection = MetricsProjection()
    for statement in projection.ddl:
        cursor.execute(statement)
    projection.apply_batch(events, cursor)
    return [m.model_dump(mode="json") for m in agent_metrics(cursor)]


def test_the_board_shows_what_the_metrics_view_would() -> None:
    rejection = TaskRejection(
        key="bad",
        task_id="bad",
        agent="nosuch",
        subject="ledger.tasks.run.nosuch",
        error_kind="unknown_agent",
        reason="no agent 'nosuch'",
        payload_excerpt="{}",
    )
    events = [
        *_run("a1", "calc", duration_ms=10.0),
        *_run("a2", "calc", fail=True, duration_ms=250.0),
        *_run("b1", "greet", duration_ms=3.0),
        *rejection.collect_events(),
    ]
    board = Board()
    changed = [c for record in _records(events) for c in board.apply(record)]
    assert board.state()["agents"] == _view_metrics(events)
    assert {c.kind for c in changed} == {"run", "agent"}
    runs = {r["task_id"]: r for r in board.state()["runs"]}
    assert runs["a1"]["status"] == "completed" and runs["a1"]["output"] == "done"
    assert runs["a1"]["prompt"] == "<b>a1</b>"  # as recorded: the page shows it as text
    assert runs["a2"]["status"] == "failed" and runs["a2"]["error_kind"] == "tool_error"
    assert runs["bad"]["status"] == "rejected" and runs["bad"]["agent"] == "nosuch"
    assert runs["a1"]["committed_at"] == event_record(events[5]).timestamp


def test_what_was_read_or_folded_already_is_not_counted_again() -> None:
    events = _run("a1", "calc")
    records = _records(events)
    board = Board()
    for record in records:
        board.apply(record)
    before = board.state()
    for record in records:  # a relay restarted and published them again
        assert board.apply(record) == []
    assert board.state() == before

    read_at = Board(positions={"runs": 3, "metrics": 3, "graphs": 0, "alerts": 0})
    assert read_at.apply(records[0]) == []  # in what the board was read from
    assert read_at.state()["agents"] == []


def test_graph_runs_and_alerts() -> None:
    graph = GraphRun(
        task_id="g1",
        graph="review",
        inputs={"x": 1},
        state=None,
        metadata={},
        max_steps=10,
        deadline=None,
    )
    graph.start_step("step:0", "prepare")
    alert = Alert(rule="errors", agent="calc")
    alert.raise_alert("error_rate", "1m", 0.75, 0.5, 4)
    board = Board()
    for record in _records([*graph.collect_events(), *alert.collect_events()]):
        board.apply(record)
    (row,) = board.state()["graphs"]
    assert (row["task_id"], row["graph"], row["status"], row["current_node"], row["steps"]) == (
        "g1",
        "review",
        "running",
        "prepare",
        1,
    )
    (raised,) = board.state()["alerts"]
    assert (raised["rule"], raised["agent"], raised["state"], raised["value"]) == (
        "errors",
        "calc",
        "raised",
        0.75,
    )
