"""Replay, fork and export/import of runs recorded by a real worker over real NATS, on
PostgreSQL and SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.conversation import Conversation
from agentledger.domain.divergence import comparable
from agentledger.domain.fork import ForkError
from agentledger.domain.history_file import HistorySubject, parse_history
from agentledger.domain.ids import run_id_for, session_aggregate_id_for
from agentledger.domain.run import AgentRun, copy_steps
from agentledger.domain.tasks import RunAgent
from agentledger.domain.timeline import event_record
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.export import (
    ImportConflict,
    export_aggregates,
    export_run,
    export_session,
    import_history,
)
from agentledger.handlers.fork import fork_run
from agentledger.handlers.replay import replay_history, replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings
from support.harness import record_tasks as record
from support.replay_agents import varied_tasks, write_replay_catalog

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(backend, catalog=str(write_replay_catalog(tmp_path)), ack_wait_s=5)


def names(store: EventStore, task_id: str) -> list[str]:
    return [type(e).__name__ for e in store.events(run_id_for(task_id))]


async def test_twenty_varied_recorded_runs_replay_identical(
    settings: Settings, tmp_path: Path
) -> None:
    tasks = varied_tasks("v")
    outcomes = await record(settings, tasks)
    assert len(tasks) == 20
    catalog = Catalog.load(settings.catalog)
    store = EventStore(settings)
    try:
        # The recordings have the shapes the test is about.
        assert {o.status for o in outcomes.values()} == {"completed", "failed"}
        assert {o.error.kind for o in outcomes.values() if o.error} == {
            "tool_error",
            "usage_limit_exceeded",
        }
        planner = store.events(run_id_for("v-06"))
        tools = [e for e in planner if isinstance(e, AgentRun.ToolCallFinished)]
        assert [e.result for e in tools[:2]] == [24.0, 18.5]  # stored in completion order
        picky = store.events(run_id_for("v-08"))
        assert any(isinstance(e, AgentRun.ToolCallFailed) and e.retry for e in picky)
        assert names(store, "v-10").count("ModelResponseReceived") == 2  # output retried
        assert outcomes["v-18"].output.startswith("You told me: the deploy is on Friday")

        for task in tasks:
            report = await replay_run(store, run_id_for(task.task_id), catalog)
            assert report.identical, (task.task_id, report.divergence and report.divergence.diff)
            assert (
                report.replayed_events == report.recorded_events == len(names(store, task.task_id))
            )

        # The same recordings replay from an export file alone, with no store.
        document = export_aggregates(
            store,
            [run_id_for(t.task_id) for t in tasks],
            HistorySubject(kind="archive", id="twenty"),
            catalog,
        )
    finally:
        store.close()
    path = tmp_path / "twenty.json"
    path.write_text(document.to_json())
    reports = await replay_history(parse_history(path.read_bytes()), catalog)
    assert sorted(r.task_id for r in reports) == [t.task_id for t in tasks]
    assert all(r.identical for r in reports)


async def test_fork_is_linked_and_shares_the_parents_history_up_to_the_fork_point(
    settings: Settings,
) -> None:
    session = "fork-s"
    tasks = [
        RunAgent(task_id="f-calc", agent="calculator", prompt="add 2 and 40"),
        RunAgent(task_id="f-n1", agent="notes", prompt="remember alpha", session_id=session),
        RunAgent(task_id="f-n2", agent="notes", prompt="remember beta", session_id=session),
    ]
    await record(settings, tasks)
    catalog = Catalog.load(settings.catalog)
    sync = EventStore(settings)
    store = AsyncEventStore(sync, 4)
    runner = AgentRunner(store=store, catalog=catalog)
    try:
        parent_id = run_id_for("f-calc")
        parent = sync.events(parent_id)
        # At 3 the model has asked for the tool: the fork runs the tool live and goes on.
        result = await fork_run(store, runner, parent_id, at=3)
        assert result.outcome.status == "completed"
        assert result.outcome.output == "The result is 42.0."
        fork = sync.events(run_id_for(result.task_id))
        first = fork[0]
        assert isinstance(first, AgentRun.RunRequested)
        assert (first.parent_run_id, first.fork_at) == (str(parent_id), 3)
        up_to = [comparable(event_record(e)) for e in fork[1:3]]
        assert up_to == [comparable(event_record(e)) for e in parent[1:3]]
        assert [type(e).__name__ for e in fork] == [type(e).__name__ for e in parent]
        assert (await replay_run(sync, run_id_for(result.task_id), catalog)).identical

        # A follow-up prompt after the parent's answer: the copied history plus a new turn.
        answered = next(
            e.originator_version
            for e in reversed(parent)
            if isinstance(e, AgentRun.ModelResponseReceived)
        )
        follow = await fork_run(store, runner, parent_id, at=answered, prompt="multiply 3 and 5")
        assert follow.outcome.output == "The result is 15.0."
        assert (await replay_run(sync, run_id_for(follow.task_id), catalog)).identical

        # A fork of a session's turn sees the session's history but adds no turn to it.
        turns_before = len(sync.events(session_aggregate_id_for(session)))
        branch = await fork_run(
            store, runner, run_id_for("f-n2"), at=1, prompt="what do you remember?"
        )
        assert branch.outcome.output == "You told me: alpha."
        after = sync.events(session_aggregate_id_for(session))
        assert len(after) == turns_before
        assert all(
            e.run_id != branch.run_id for e in after if isinstance(e, Conversation.TurnRecorded)
        )
        assert (await replay_run(sync, run_id_for(branch.task_id), catalog)).identical
    finally:
        store.close()


async def test_export_then_import_into_a_fresh_store_then_replay_is_identical(
    settings: Settings, make_settings: Any, backend: str, tmp_path: Path
) -> None:
    tasks = varied_tasks("e")
    await record(settings, tasks)
    catalog = Catalog.load(settings.catalog)
    source = EventStore(settings)
    try:
        session = export_session(source, "e-session", catalog)
        single = export_run(source, run_id_for("e-06"), catalog)
        failed = export_run(source, run_id_for("e-12"), catalog)
    finally:
        source.close()
    assert {a.aggregate_type for a in session.aggregates} == {"AgentRun", "Conversation"}
    assert session.agents["notes"] == "agentledger.catalog.example_agents:notes"

    other = "sqlite" if backend == "postgres" else "postgres"
    target_settings = make_settings(other, sqlite_path=tmp_path / "target.db")
    target = EventStore(target_settings)
    try:
        for document in (session, single, failed):
            text = document.to_json()
            report = import_history(target, parse_history(text))
            assert report.imported_events == sum(len(a.events) for a in document.aggregates)
            again = import_history(target, parse_history(text))  # idempotent
            assert again.imported_events == 0 and again.skipped_events == report.imported_events
        for task_id in ("e-16", "e-17", "e-18", "e-06", "e-12"):
            report = await replay_run(target, run_id_for(task_id), catalog)
            assert report.identical, task_id

        # A file that disagrees with what the target holds imports nothing.
        data = single.model_dump(mode="json")
        finished = next(
            e for e in data["aggregates"][0]["events"] if e["topic"].endswith("ToolCallFinished")
        )
        finished["state"]["result"] = 99.0
        data["aggregates"].append(
            {
                "aggregate_id": str(run_id_for("never-there")),
                "aggregate_type": "AgentRun",
                "events": data["aggregates"][0]["events"][:1],
            }
        )
        tampered = parse_history(json.dumps(data))
        with pytest.raises(ImportConflict, match="differs"):
            import_history(target, tampered)
        assert target.events(run_id_for("never-there")) == []
    finally:
        target.close()


async def test_an_interrupted_fork_resumes_under_its_task_id_and_a_taken_id_is_refused(
    settings: Settings,
) -> None:
    await record(settings, [RunAgent(task_id="i-calc", agent="calculator", prompt="add 1 and 2")])
    catalog = Catalog.load(settings.catalog)
    sync = EventStore(settings)
    store = AsyncEventStore(sync, 2)
    try:
        parent = run_id_for("i-calc")
        # An interrupted fork: recorded, never run (the process died right after the save).
        plan_events = sync.events(parent)
        fork = AgentRun(
            task_id="i-fork",
            agent="calculator",
            prompt="add 1 and 2",
            session_id=None,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
            parent_run_id=str(parent),
            fork_at=3,
            fork_prompt=None,
        )
        copy_steps(fork, plan_events[1:3])
        sync.save(fork)
        runner = AgentRunner(store=store, catalog=catalog)
        result = await fork_run(store, runner, parent, at=3, task_id="i-fork")
        assert (
            result.outcome.status == "completed" and result.outcome.output == "The result is 3.0."
        )
        names = [type(e).__name__ for e in sync.events(run_id_for("i-fork"))]
        assert names.count("RunRequested") == 1 and names[-1] == "RunCompleted"
        with pytest.raises(ForkError, match="taken by another run"):
            await fork_run(store, runner, parent, at=1, prompt="add 5 and 5", task_id="i-fork")
    finally:
        store.close()
