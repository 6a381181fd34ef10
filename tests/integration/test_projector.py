"""The projector over a real event store and view store, on SQLite and on PostgreSQL:
views are right, each event is applied exactly once, and a rebuilt view equals the live
one, even when rebuilt while the live projector runs."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from agentledger.domain.conversation import Conversation
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.handlers.projector import Projector, UnknownEventTopic, _notify_channel
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore, to_pyformat, view_store_for
from agentledger.projections.conversations import get_conversation
from agentledger.projections.metrics import agent_metrics
from agentledger.projections.runs import get_run, list_runs
from agentledger.projections.snapshots import list_snapshots
from agentledger.projections.views import ALL_PROJECTIONS, UnknownView
from support.harness import table_contents

if TYPE_CHECKING:
    from tests.conftest import Backend, MakeSettings


@pytest.fixture
def settings(backend: Backend, make_settings: MakeSettings) -> Settings:
    # These tests need no broker: a dummy URL keeps the fixture from starting NATS.
    return make_settings(backend, nats_url="nats://127.0.0.1:1")


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    event_store = EventStore(settings)
    yield event_store
    event_store.close()


@pytest.fixture
def views(settings: Settings) -> Iterator[ViewStore]:
    view_store = view_store_for(settings)
    yield view_store
    view_store.close()


@pytest.fixture
def projector(store: EventStore, views: ViewStore) -> Projector:
    # A small batch, so the log takes several batches and batching is exercised.
    return Projector(store, views, [p() for p in ALL_PROJECTIONS], batch=7, poll_s=0.005)


def new_run(task_id: str, agent: str, session_id: str | None = None) -> AgentRun:
    return AgentRun(
        task_id=task_id,
        agent=agent,
        prompt=f"prompt {task_id}",
        session_id=session_id,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )


def save_session(store: EventStore, session_id: str, turns: int, agent: str = "echo") -> None:
    """A session of `turns` completed runs with a tool call each, saved step by step."""
    conversation = Conversation(session_id=session_id)
    for turn in range(turns):
        run = new_run(f"{session_id}-t{turn}", agent, session_id)
        store.save(run)
        run.send_model_request({"kind": "request", "parts": []})
        run.receive_model_response({"kind": "response", "parts": []}, "test", 20, 5)
        run.start_tool_call("c1", "add", {"a": 1, "b": 2})
        store.save(run)
        run.finish_tool_call("c1", "add", 3)
        run.complete({"sum": 3}, cost_usd=0.01, duration_ms=10.0 * (turn + 1))
        messages = [{"kind": "request", "parts": [{"part_kind": "user-prompt", "content": "hi"}]}]
        conversation.record_turn(str(run.id), run.task_id, agent, messages)
        store.save(run, conversation)


def save_mix(store: EventStore) -> dict[str, AgentRun]:
    """Completed sessions, a failed run, an in-flight run and a rejection."""
    save_session(store, "s-1", turns=3)
    save_session(store, "s-2", turns=1, agent="helper")
    failed = new_run("failed", "helper")
    failed.send_model_request({})
    failed.fail("model_error", "boom", retryable=True, duration_ms=4.0)
    in_flight = new_run("in-flight", "echo")
    in_flight.send_model_request({})
    in_flight.start_tool_call("c9", "slow", {})
    rejection = TaskRejection(
        key="bad",
        task_id="bad",
        agent="ghost",
        subject="ledger.tasks.run.ghost",
        error_kind="unknown_agent",
        reason="no agent named 'ghost'",
        payload_excerpt="{}",
    )
    store.save(failed, in_flight, rejection)
    return {"failed": failed, "in_flight": in_flight}


def drain(projector: Projector) -> int:
    total = 0
    while applied := projector.run_once():
        total += applied
    return total


def test_the_projector_folds_the_log_into_every_view_exactly_once(
    store: EventStore, views: ViewStore, projector: Projector
) -> None:
    runs = save_mix(store)
    head = store.max_notification_id()
    assert projector.lag() == {p.name: head for p in ALL_PROJECTIONS}

    assert drain(projector) == head * len(ALL_PROJECTIONS)
    assert projector.run_once() == 0
    assert projector.lag() == {p.name: 0 for p in ALL_PROJECTIONS}
    assert projector.wait_until(head, timeout=1.0)
    assert not projector.wait_until(head + 1, timeout=0.05)

    with views.read() as cursor:
        assert [r.status for r in list_runs(cursor, session_id="s-1")] == ["completed"] * 3
        failed = get_run(cursor, task_id="failed")
        assert failed is not None and (failed.status, failed.retryable) == ("failed", True)
        rejected = get_run(cursor, task_id="bad")
        assert rejected is not None and rejected.status == "rejected"
        in_flight = get_run(cursor, run_id=str(runs["in_flight"].id))
        assert in_flight is not None and in_flight.status == "running"

        conversation = get_conversation(cursor, "s-1")
        assert conversation is not None
        assert [t.turn for t in conversation.turns] == [1, 2, 3]
        assert conversation.turns[0].transcript[0].content == "hi"

        metrics = {m.agent: m for m in agent_metrics(cursor)}
        assert (metrics["echo"].runs, metrics["echo"].completed, metrics["echo"].running) == (
            4,
            3,
            1,
        )
        assert metrics["echo"].input_tokens == 60
        assert metrics["echo"].latency_p50_ms == 20.0
        assert (metrics["helper"].failed, metrics["helper"].failure_rate) == (1, 0.5)
        assert metrics["ghost"].rejected == 1

        (run_snapshot,) = list_snapshots(cursor, kind="run")
        assert run_snapshot.task_id == "in-flight"
        assert [c.tool_call_id for c in run_snapshot.pending_tool_calls] == ["c9"]
        assert {s.session_id for s in list_snapshots(cursor, kind="session")} == {"s-1", "s-2"}

    # New events are picked up where each projection left off.
    save_session(store, "s-3", turns=1)
    assert drain(projector) == (store.max_notification_id() - head) * len(ALL_PROJECTIONS)
    with views.read() as cursor:
        assert get_conversation(cursor, "s-3") is not None


def test_a_rebuilt_view_equals_the_live_view(
    store: EventStore, views: ViewStore, projector: Projector
) -> None:
    save_mix(store)
    drain(projector)
    live = table_contents(views)
    head = store.max_notification_id()

    for projection in ALL_PROJECTIONS:
        seen: list[tuple[int, int]] = []

        def progress(done: int, total: int, seen: list[tuple[int, int]] = seen) -> None:
            seen.append((done, total))

        assert projector.rebuild(projection.name, progress) == head
        assert seen[0] == (0, head) and seen[-1] == (head, head)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert views.tracking(projection.name) == head
        assert table_contents(views) == live
    assert projector.run_once() == 0

    with pytest.raises(UnknownView, match="valid views: runs"):
        projector.rebuild("nope")


def test_rebuilding_while_the_live_projector_runs_applies_each_event_once(
    store: EventStore, views: ViewStore, projector: Projector
) -> None:
    save_mix(store)
    handle = projector.start_in_thread()
    stop_writing = threading.Event()

    def write() -> None:
        i = 0
        while not stop_writing.is_set() and i < 60:
            save_session(store, f"w-{i}", turns=1)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for projection in ALL_PROJECTIONS:
            projector.rebuild(projection.name)
    finally:
        stop_writing.set()
        writer.join()
    assert projector.wait_until(store.max_notification_id(), timeout=30.0)
    handle.stop()
    assert projector.last_error is None

    under_load = table_contents(views)
    for projection in ALL_PROJECTIONS:
        projector.rebuild(projection.name)
    assert table_contents(views) == under_load


def test_an_unknown_event_topic_stops_the_projector_with_a_clear_error(
    backend: Backend, settings: Settings, store: EventStore, projector: Projector
) -> None:
    if backend != "sqlite":
        pytest.skip("rewrites a stored topic with SQLite's own SQL")
    save_session(store, "s-1", turns=1)
    with sqlite3.connect(settings.sqlite_file) as connection:
        connection.execute(
            "UPDATE stored_events SET topic = 'gone.module:Vanished' WHERE rowid = 2"
        )
    with pytest.raises(UnknownEventTopic, match=r"notification 2 has event topic 'gone\.module"):
        projector.run_once()
    # Nothing of the failed batch was applied; the position stays before it.
    assert projector.lag()["runs"] == store.max_notification_id()


class _FlakyStore:
    """The real store, unavailable for its first `failures` notification reads."""

    def __init__(self, store: EventStore, failures: int) -> None:
        self._store = store
        self.failures = failures

    def notifications(self, start: int, limit: int) -> Sequence[Any]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database restarting")
        return self._store.notifications(start, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_live_projector_rides_out_an_outage(store: EventStore, views: ViewStore) -> None:
    save_session(store, "s-1", turns=2)
    flaky: Any = _FlakyStore(store, failures=3)
    projector = Projector(flaky, views, [p() for p in ALL_PROJECTIONS], poll_s=0.005)
    handle = projector.start_in_thread()
    try:
        assert projector.wait_until(store.max_notification_id(), timeout=10.0)
    finally:
        handle.stop()
    assert flaky.failures == 0
    assert projector.last_error is None


def test_sql_placeholders_and_percent_signs_reach_postgres_intact(views: ViewStore) -> None:
    with views.read() as cursor:
        cursor.execute("SELECT '100%', ?, 'why?', ? || '%'", ("a?", "50"))
        assert cursor.fetchone() == ("100%", "a?", "why?", "50%")


def test_to_pyformat() -> None:
    assert to_pyformat("SELECT ? WHERE x LIKE 'a%?' AND y = ?") == (
        "SELECT %s WHERE x LIKE 'a%%?' AND y = %s"
    )
    assert to_pyformat("SELECT 'it''s ?', \"col?\", ?") == "SELECT 'it''s ?', \"col?\", %s"


def save_busy_runs(store: EventStore) -> None:
    """Runs with many events each (several steps, tool calls that fail, retry and stay
    pending), saved in one go and step by step, so batches cut them anywhere."""
    for i in range(3):
        run = new_run(f"busy-{i}", "echo" if i % 2 else "helper", session_id=None)
        for step in range(1, 4):
            run.send_model_request({"kind": "request", "parts": [], "step": step})
            run.receive_model_response({"kind": "response", "parts": []}, "test", 10 + i, step)
            run.start_tool_call(f"c{step}", "add", {"step": step})
            run.start_tool_call(f"d{step}", "div", {"step": step})
            run.fail_tool_call(f"d{step}", "div", "division by zero", retry=True)
            run.finish_tool_call(f"c{step}", "add", step)
            if i == 1:
                store.save(run)
        run.start_tool_call("left", "slow", {})
        if i < 2:
            run.complete({"i": i}, cost_usd=0.1 * (i + 1), duration_ms=3.0 + i)
        store.save(run)


@pytest.mark.parametrize("batch", [4, 1000])
def test_a_batch_folds_to_the_same_rows_as_one_event_at_a_time(
    store: EventStore, views: ViewStore, batch: int
) -> None:
    save_mix(store)
    save_busy_runs(store)
    projections = [p() for p in ALL_PROJECTIONS]
    one_at_a_time = Projector(store, views, projections, batch=1)
    assert drain(one_at_a_time) == store.max_notification_id() * len(ALL_PROJECTIONS)
    expected = table_contents(views)
    assert len(expected["al_runs"]) == 10 and len(expected["al_snapshots"]) == 4

    # A rebuild folds the log again, `batch` events per transaction (1000: all of it in
    # one batch, every run's events together).
    batched = Projector(store, views, projections, batch=batch)
    for projection in ALL_PROJECTIONS:
        batched.rebuild(projection.name)
    assert table_contents(views) == expected

    # And so does the live path, after a batch already applied is applied again.
    for projection in projections:
        with views.transaction() as cursor:
            events = [store.decode(n) for n in store.notifications(start=1, limit=1000)]
            projection.apply_batch(events, cursor)
    assert table_contents(views) == expected


def _copy_event_sql(notification_id: int, later_by: int) -> str:
    """SQL that inserts a copy of a stored event as a later version of its aggregate."""
    return (
        "INSERT INTO agentledger_events (originator_id, originator_version, topic, state)"
        f" SELECT originator_id, originator_version + {later_by}, topic, state"
        f" FROM agentledger_events WHERE notification_id = {notification_id}"
    )


def test_an_event_that_commits_late_is_not_skipped(
    backend: Backend, settings: Settings, store: EventStore, views: ViewStore, projector: Projector
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite serialises its writers: ids always commit in order")
    import psycopg

    assert settings.postgres_dsn is not None
    dsn = settings.postgres_dsn.get_secret_value()
    save_session(store, "s-1", turns=1)
    drain(projector)

    # A transaction draws the next id and stays open while later ids commit.
    with psycopg.connect(dsn) as late:
        late.execute(_copy_event_sql(1, later_by=1000))
        (in_flight,) = late.execute("SELECT max(notification_id) FROM agentledger_events")
        save_session(store, "s-2", turns=1)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            projector.run_once()
            time.sleep(0.01)
        assert {views.tracking(p.name) for p in ALL_PROJECTIONS} == {in_flight[0] - 1}
        late.commit()
    drain(projector)
    assert {views.tracking(p.name) for p in ALL_PROJECTIONS} == {store.max_notification_id()}

    # A transaction that rolls back leaves its id unused for ever: it is skipped.
    with psycopg.connect(dsn) as gone:
        gone.execute(_copy_event_sql(1, later_by=2000))
        gone.rollback()
    save_session(store, "s-3", turns=1)
    deadline = time.monotonic() + 5.0
    while views.tracking("runs") < store.max_notification_id() and time.monotonic() < deadline:
        projector.run_once()
        time.sleep(0.01)
    assert {views.tracking(p.name) for p in ALL_PROJECTIONS} == {store.max_notification_id()}
    with views.read() as cursor:
        assert get_conversation(cursor, "s-3") is not None


def test_a_commit_wakes_a_listening_projector(
    backend: Backend, store: EventStore, views: ViewStore
) -> None:
    signal = views.commit_signal(_notify_channel(store))
    if backend == "sqlite":
        assert signal is None
        return
    assert signal is not None
    try:
        deadline = time.monotonic() + 10.0
        while not signal.listening and time.monotonic() < deadline:
            time.sleep(0.01)
        assert signal.listening
        signal.clear()
        assert not signal.wait(0.05)
        save_session(store, "s-1", turns=1)
        assert signal.wait(5.0)
    finally:
        signal.close()
