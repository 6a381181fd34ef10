"""The runner over a real (SQLite) event store: resume, deadlines, limits, idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.catalog import Catalog, CatalogEntry
from agentledger.handlers.recording import messages_to_json
from agentledger.handlers.runner import AgentRunner, RunSuperseded
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.leases import LeaseLost
from agentledger.infra.settings import Settings

pytestmark = pytest.mark.asyncio

calls: list[str] = []
tool_runs: list[str] = []


def _model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    last = messages[-1]
    if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts):
        calls.append("second")
        return ModelResponse(parts=[TextPart("done")])
    calls.append("first")
    return ModelResponse(parts=[ToolCallPart("effect", {"x": 1}, tool_call_id="call-1")])


agent = Agent(FunctionModel(_model), name="resumable")


@agent.tool_plain
def effect(x: int) -> str:
    tool_runs.append("ran")
    return f"effect {x}"


@pytest.fixture
def store(tmp_path: Path) -> AsyncEventStore:
    calls.clear()
    tool_runs.clear()
    return AsyncEventStore(EventStore(Settings(data_dir=tmp_path, postgres_dsn=None)), threads=2)


def _runner(store: AsyncEventStore) -> AgentRunner:
    catalog = Catalog(path=Path("inline"), entries={})
    catalog.entries["resumable"] = CatalogEntry(name="resumable", ref="inline:agent", _agent=agent)
    return AgentRunner(store=store, catalog=catalog)


def _recorded_first_step(store: AsyncEventStore, task: RunAgent, with_tool_result: bool) -> None:
    """What a worker that died mid-run left behind."""
    run = AgentRun(
        task_id=task.task_id,
        agent=task.agent,
        prompt=task.prompt,
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    request = ModelRequest.user_text_prompt(task.prompt)
    response = ModelResponse(parts=[ToolCallPart("effect", {"x": 1}, tool_call_id="call-1")])
    req_json, resp_json = messages_to_json([request, response])
    run.send_model_request(req_json)
    run.receive_model_response(resp_json, "function", 10, 2)
    if with_tool_result:
        run.start_tool_call("call-1", "effect", {"x": 1})
        run.finish_tool_call("call-1", "effect", "effect 1 (recorded)")
    store.sync.save(run)


@pytest.mark.parametrize("with_tool_result", [False, True], ids=["tool-pending", "tool-recorded"])
async def test_resume_skips_recorded_model_calls_and_tool_results(
    store: AsyncEventStore, with_tool_result: bool
) -> None:
    task = RunAgent(task_id="resume-1", agent="resumable", prompt="go")
    _recorded_first_step(store, task, with_tool_result)
    outcome = await _runner(store).run(task)
    assert outcome.status == "completed" and outcome.output == "done"
    assert calls == ["second"], "the recorded first model response was requested again"
    assert tool_runs == ([] if with_tool_result else ["ran"])
    assert outcome.usage.requests == 2  # the recorded step's usage counts too
    names = [type(e).__name__ for e in store.sync.events(run_id_for("resume-1"))]
    assert names.count("ModelResponseReceived") == 2
    assert names.count("ToolCallFinished") == 1
    if with_tool_result:
        second_request = [
            e
            for e in store.sync.events(run_id_for("resume-1"))
            if type(e).__name__ == "ModelRequestSent"
        ][-1]
        assert "effect 1 (recorded)" in str(second_request.message)


async def test_a_driver_that_loses_its_lease_stops_before_its_next_model_call(
    store: AsyncEventStore,
) -> None:
    """The guard (`Lease.check`) is asked before every node: once it says the lease is
    lost, no further model call or tool runs, nothing more is recorded, and the run is
    left to its new driver (RunSuperseded, not a failure)."""
    checks: list[int] = []

    def guard() -> None:
        checks.append(len(calls))
        if calls:  # lost once the first model call is made
            raise LeaseLost("run: another worker took over its lease")

    task = RunAgent(task_id="lease-1", agent="resumable", prompt="go")
    with pytest.raises(RunSuperseded, match="took over"):
        await _runner(store).run(task, guard=guard)
    assert calls == ["first"] and tool_runs == []
    run = await store.get(run_id_for("lease-1"), AgentRun)
    assert run is not None and run.status == "running"
    names = [type(e).__name__ for e in store.sync.events(run_id_for("lease-1"))]
    assert "RunFailed" not in names and "ToolCallStarted" not in names
    # The new driver resumes from what was recorded: the model is not asked again.
    outcome = await _runner(store).run(task)
    assert outcome.status == "completed" and calls == ["first", "second"]
    assert tool_runs == ["ran"]


async def test_running_a_finished_task_again_returns_the_stored_outcome(
    store: AsyncEventStore,
) -> None:
    runner = _runner(store)
    task = RunAgent(task_id="once-1", agent="resumable", prompt="go")
    first = await runner.run(task)
    second = await runner.run(task)
    assert first == second
    assert calls == ["first", "second"] and tool_runs == ["ran"]


async def test_past_deadline_fails_without_calling_the_model(store: AsyncEventStore) -> None:
    task = RunAgent(
        task_id="late-1",
        agent="resumable",
        prompt="go",
        deadline=datetime.now(UTC) - timedelta(seconds=1),
    )
    outcome = await _runner(store).run(task)
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.kind == "deadline_exceeded"
    assert calls == []
