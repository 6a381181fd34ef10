"""A save that fails for good leaves the run's stream whole: the aggregate object that
ran ahead of the store is never saved again, so no later save leaves a gap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelRequest, UserPromptPart

from agentledger.domain.ids import run_id_for, session_aggregate_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.catalog import Catalog, CatalogEntry
from agentledger.handlers.recording import append_messages, messages_to_json
from agentledger.handlers.runner import AgentRunner, RunSuperseded, TransientRunError
from agentledger.infra.event_store import (
    AsyncEventStore,
    BrokenStream,
    EventStore,
    StoreUnavailable,
    UnsavedAggregate,
)
from support.replay_agents import write_replay_catalog


class FailsOneToolResult(EventStore):
    """In memory; the first save holding a `ToolCallFinished` fails as if the database
    went away, slowly (as a save does while it retries), so that the sibling call's
    result arrives meanwhile."""

    def __init__(self) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.failed = False

    def save(self, *objs: Any) -> int | None:
        names = {type(o).__name__ for o in objs}
        if not self.failed and "ToolCallFinished" in names:
            self.failed = True
            time.sleep(0.2)
            raise StoreUnavailable("event store unavailable: the database went away")
        return super().save(*objs)


async def test_a_failed_save_in_a_parallel_tool_step_leaves_a_loadable_stream(
    tmp_path: Path,
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    store = FailsOneToolResult()
    # Store calls in threads, as in a worker: the sibling's save can run meanwhile.
    runner = AgentRunner(store=AsyncEventStore(store, 4, retry_s=0), catalog=catalog)
    task = RunAgent(task_id="p", agent="planner", prompt="how warm?")  # two calls at once

    with pytest.raises(TransientRunError):
        await runner.run(task, first_delivery=True)
    assert store.failed
    versions = [e.originator_version for e in store.events(run_id_for("p"))]
    assert versions == list(range(1, len(versions) + 1))
    run = store.get(run_id_for("p"), AgentRun)  # loads: no OriginatorVersionError
    assert run is not None and run.status == "running"

    outcome = await runner.run(task)  # the redelivery resumes from what was saved
    clean = EventStore.in_memory()
    expected = await AgentRunner(store=AsyncEventStore(clean, 0), catalog=catalog).run(
        task, first_delivery=True
    )
    assert outcome.status == "completed", outcome
    assert outcome.output == expected.output


async def test_an_aggregate_whose_save_failed_is_never_saved_again() -> None:
    store = AsyncEventStore(EventStore.in_memory(), 0, retry_s=0)
    run = AgentRun(
        task_id="x", agent="a", prompt="p", session_id=None, metadata={},
        usage_limits={}, deadline=None, history_version=0,
    )  # fmt: skip

    class Down(EventStore):
        def save(self, *objs: Any) -> int | None:
            raise StoreUnavailable("event store unavailable: down")

    down = AsyncEventStore(Down(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}), 0, retry_s=0)
    with pytest.raises(StoreUnavailable):
        await down.save(run)
    with pytest.raises(UnsavedAggregate, match="reload it"):
        await store.save(run)
    assert store.sync.events(run.id) == []


class SecondDriver(EventStore):
    """In memory; just before a run's completion is saved, "another worker" records a
    step on the same run (and so both the run and its session's turn conflict)."""

    def __init__(self) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.interfered = False

    def save(self, *objs: Any) -> int | None:
        if not self.interfered and any(type(o).__name__ == "RunCompleted" for o in objs):
            self.interfered = True
            other = self.get(objs[0].originator_id, AgentRun)
            assert other is not None
            step = [ModelRequest(parts=[UserPromptPart("from the other worker")])]
            append_messages(other, step, messages_to_json(step))
            super().save(*other.collect_events())
        return super().save(*objs)


async def test_a_completion_is_not_retried_on_top_of_another_workers_steps(
    tmp_path: Path,
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    store = SecondDriver()
    runner = AgentRunner(store=AsyncEventStore(store, 0), catalog=catalog)
    task = RunAgent(task_id="s1", agent="notes", prompt="remember x", session_id="chat")
    with pytest.raises(RunSuperseded):
        await runner.run(task, first_delivery=True)
    names = [type(e).__name__ for e in store.events(run_id_for("s1"))]
    assert "RunCompleted" not in names
    assert store.events(session_aggregate_id_for("chat")) == []


def test_a_stream_with_a_missing_version_is_a_clear_broken_stream_error() -> None:
    store = EventStore.in_memory()
    run = AgentRun(
        task_id="g", agent="a", prompt="p", session_id=None, metadata={},
        usage_limits={}, deadline=None, history_version=0,
    )  # fmt: skip
    store.save(run)
    step = [
        ModelRequest(parts=[UserPromptPart("one")]),
        ModelRequest(parts=[UserPromptPart("two")]),
    ]
    append_messages(run, step, messages_to_json(step))
    _, second = run.collect_events()
    store.save(second)  # version 3 without version 2
    with pytest.raises(BrokenStream, match="not contiguous"):
        store.get(run.id, AgentRun)


async def test_a_timeout_that_is_not_the_deadline_is_transient_not_deadline_exceeded(
    tmp_path: Path,
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    async def hangs_up(messages: list[Any], info: AgentInfo) -> Any:
        raise TimeoutError("read timed out")

    catalog = Catalog.load(write_replay_catalog(tmp_path))
    catalog.entries["slowpoke"] = CatalogEntry(
        name="slowpoke", ref="inline:slowpoke", _agent=Agent(FunctionModel(hangs_up))
    )
    runner = AgentRunner(store=AsyncEventStore(EventStore.in_memory(), 0), catalog=catalog)
    task = RunAgent(task_id="to", agent="slowpoke", prompt="hi")  # no deadline
    with pytest.raises(TransientRunError, match="timed out"):
        await runner.run(task, first_delivery=True)
    outcome = await runner.run(task, final_attempt=True)
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "transient_exhausted"
