"""The snapshots view: resumable state of in-flight runs and of sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

import pytest

from agentledger.domain.conversation import Conversation
from agentledger.domain.run import AgentRun
from agentledger.projections.snapshots import (
    PendingToolCall,
    SnapshotsProjection,
    get_snapshot,
    list_snapshots,
)


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in SnapshotsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def fold(cursor: sqlite3.Cursor, events: Iterable[object]) -> None:
    projection = SnapshotsProjection()
    for event in events:
        projection.apply(event, cursor)


def new_run(task_id: str) -> AgentRun:
    return AgentRun(
        task_id=task_id,
        agent="echo",
        prompt="p",
        session_id="s-1",
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )


def test_an_in_flight_run_shows_its_progress_and_pending_tool_calls(
    cursor: sqlite3.Cursor,
) -> None:
    run = new_run("t-1")
    run.send_model_request({})
    run.receive_model_response({}, "test", 1, 1)
    run.start_tool_call("c1", "add", {})
    run.start_tool_call("c2", "mul", {})
    run.start_tool_call("c3", "div", {})
    run.finish_tool_call("c1", "add", 2)
    run.fail_tool_call("c3", "div", "division by zero", retry=True)
    fold(cursor, run.collect_events())

    snapshot = get_snapshot(cursor, str(run.id))
    assert snapshot is not None
    assert snapshot.kind == "run"
    assert (snapshot.task_id, snapshot.agent, snapshot.session_id) == ("t-1", "echo", "s-1")
    assert (snapshot.version, snapshot.steps, snapshot.messages) == (run.version, 1, 2)
    assert snapshot.pending_tool_calls == [PendingToolCall(tool_call_id="c2", tool_name="mul")]


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_the_run_snapshot_goes_when_the_run_ends(cursor: sqlite3.Cursor, outcome: str) -> None:
    run = new_run(f"t-{outcome}")
    run.send_model_request({})
    fold(cursor, run.collect_events())
    assert get_snapshot(cursor, str(run.id)) is not None

    if outcome == "completed":
        run.complete("ok", cost_usd=None, duration_ms=1.0)
    else:
        run.fail("model_error", "boom", retryable=False, duration_ms=1.0)
    fold(cursor, run.collect_events())
    assert get_snapshot(cursor, str(run.id)) is None
    assert list_snapshots(cursor, kind="run") == []


def test_a_session_snapshot_follows_its_turns(cursor: sqlite3.Cursor) -> None:
    conversation = Conversation(session_id="s-1")
    conversation.record_turn("run-1", "t-1", "echo", [])
    conversation.record_turn("run-2", "t-2", "echo", [])
    fold(cursor, conversation.collect_events())
    fold(cursor, new_run("t-3").collect_events())

    (session,) = list_snapshots(cursor, kind="session")
    assert session.aggregate_id == str(conversation.id)
    assert (session.session_id, session.turns, session.last_run_id) == ("s-1", 2, "run-2")
    assert session.version == conversation.version
    assert [s.kind for s in list_snapshots(cursor)] == ["run", "session"]


def test_applying_events_again_changes_nothing(cursor: sqlite3.Cursor) -> None:
    run = new_run("t-4")
    run.send_model_request({})
    run.start_tool_call("c1", "add", {})
    events = run.collect_events()
    fold(cursor, events)
    before = list_snapshots(cursor)
    fold(cursor, events)
    assert list_snapshots(cursor) == before


def test_a_batch_folds_like_one_event_at_a_time(cursor: sqlite3.Cursor) -> None:
    ended = new_run("t-5")
    ended.send_model_request({})
    ended.start_tool_call("c1", "add", {})
    ended.complete("ok", cost_usd=None, duration_ms=1.0)
    busy = new_run("t-6")
    busy.send_model_request({})
    busy.receive_model_response({}, "test", 1, 1)
    busy.start_tool_call("c1", "add", {})
    busy.start_tool_call("c2", "mul", {})
    busy.fail_tool_call("c1", "add", "boom", retry=True)
    busy.start_tool_call("c3", "div", {})
    busy.finish_tool_call("c2", "mul", 6)
    conversation = Conversation(session_id="s-2")
    conversation.record_turn("run-1", "t-1", "echo", [])
    conversation.record_turn("run-2", "t-2", "echo", [])
    events = [*ended.collect_events(), *busy.collect_events(), *conversation.collect_events()]
    fold(cursor, events)
    expected = cursor.execute("SELECT * FROM al_snapshots ORDER BY aggregate_id").fetchall()
    assert len(expected) == 2
    cursor.execute("DELETE FROM al_snapshots")

    projection = SnapshotsProjection()
    projection.apply_batch(events[:7], cursor)
    projection.apply_batch(events[5:], cursor)  # overlapping: applied events are skipped
    assert cursor.execute("SELECT * FROM al_snapshots ORDER BY aggregate_id").fetchall() == (
        expected
    )


def test_a_finished_run_stays_gone_when_its_earlier_events_come_again(
    cursor: sqlite3.Cursor,
) -> None:
    run = new_run("t-7")
    run.send_model_request({})
    requested, *middle = run.collect_events()
    run.complete("ok", cost_usd=None, duration_ms=1.0)
    (completed,) = run.collect_events()
    fold(cursor, [requested, *middle, completed])
    assert get_snapshot(cursor, str(run.id)) is None

    fold(cursor, [requested])  # a duplicated or replayed RunRequested
    fold(cursor, middle)
    SnapshotsProjection().apply_batch([requested, *middle, completed], cursor)
    assert get_snapshot(cursor, str(run.id)) is None
    assert list_snapshots(cursor, kind="run") == []

    # Ended within one batch, never seen before: no row, and a tombstone all the same.
    other = new_run("t-8")
    other.complete("ok", cost_usd=None, duration_ms=1.0)
    events = other.collect_events()
    SnapshotsProjection().apply_batch(events, cursor)
    SnapshotsProjection().apply_batch(events[:1], cursor)
    assert get_snapshot(cursor, str(other.id)) is None


def test_snapshots_are_listed_a_page_at_a_time(cursor: sqlite3.Cursor) -> None:
    for i in range(5):
        fold(cursor, new_run(f"page-{i}").collect_events())
    everything = list_snapshots(cursor, kind="run", limit=100)
    assert len(everything) == 5
    assert list_snapshots(cursor, kind="run", limit=2) == everything[:2]
    assert list_snapshots(cursor, limit=2, offset=2) == everything[2:4]
    assert list_snapshots(cursor, kind="run", offset=4) == everything[4:]
    with pytest.raises(ValueError, match="limit >= 1"):
        list_snapshots(cursor, limit=0)
