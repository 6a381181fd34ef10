"""Graph tasks on the real event stores (PostgreSQL and SQLite), without NATS: start,
duplicate, agent steps as recorded agent runs, pause and resume across a new runner,
cancel, the step bound, and what is rejected."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.graphs.tasks import CancelGraph, ResumeGraph, RunGraph
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.domain.run import AgentRun
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.graphs.runner import GraphRejected, GraphRunner, agent_step_task_id
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings
from support.sample_graphs import CALLS

pytestmark = pytest.mark.asyncio

CATALOG = """
[agents.risk_analyst]
ref = "agentledger.catalog.example_agents:risk_analyst"

[graphs.review]
ref = "agentledger.catalog.example_graphs:review"

[graphs.fan]
ref = "support.sample_graphs:fan_graph"

[graphs.approval]
ref = "support.sample_graphs:approval_graph"

[graphs.cycle]
ref = "support.sample_graphs:cycle_graph"
max_steps = 30
"""


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    return make_settings(backend, catalog=str(catalog))


@pytest.fixture
def store(settings: Settings) -> Iterator[AsyncEventStore]:
    store = AsyncEventStore(EventStore(settings), 4, retry_s=0)
    yield store
    store.close()


def runner_on(store: AsyncEventStore, settings: Settings) -> GraphRunner:
    catalog = Catalog.load(settings.catalog)
    return GraphRunner(
        store=store, catalog=catalog, agents=AgentRunner(store=store, catalog=catalog)
    )


async def test_the_review_example_takes_each_branch_with_a_recorded_agent_run(
    store: AsyncEventStore, settings: Settings
) -> None:
    runner = runner_on(store, settings)
    high = RunGraph(
        task_id="review-high", graph="review", inputs={"customer": "acme", "amounts": [9e3, 6e3]}
    )
    normal = RunGraph(
        task_id="review-normal", graph="review", inputs={"customer": "bo", "amounts": [50]}
    )
    first, second = await runner.run(high), await runner.run(normal)
    assert (first.status, first.output["decision"]) == ("completed", "escalated")
    assert (second.status, second.output["decision"]) == ("completed", "approved")
    agent_run = await store.get(
        run_id_for(agent_step_task_id("review-high", "__start__/prepare/analyse")), AgentRun
    )
    assert agent_run is not None and agent_run.status == "completed"
    requested = (await store.events(agent_run.id))[0]
    assert requested.metadata["graph_task_id"] == "review-high"
    # The same task again: the stored outcome, nothing runs.
    again = await runner.run(high)
    assert again == first


async def test_a_duplicate_task_runs_no_step_again(
    store: AsyncEventStore, settings: Settings
) -> None:
    runner = runner_on(store, settings)
    CALLS.clear()
    task = RunGraph(task_id="fan-1", graph="fan", inputs=7)
    outcome = await runner.run(task)
    calls = len(CALLS)
    assert outcome.status == "completed" and outcome.steps == calls
    assert await runner.run(task) == outcome
    assert len(CALLS) == calls


async def test_a_driver_that_loses_its_lease_starts_no_further_step(
    store: AsyncEventStore, settings: Settings
) -> None:
    """The lease guard is asked before each live step: once it says the lease is lost,
    no step starts and nothing is recorded as failed; the new driver goes on from the
    recorded steps without running them again."""
    from agentledger.infra.leases import LeaseLost

    runner = runner_on(store, settings)
    CALLS.clear()
    task = RunGraph(task_id="fan-lease", graph="fan", inputs=7)
    checks: list[int] = []

    def guard() -> None:
        checks.append(len(CALLS))
        if len(checks) > 1:
            raise LeaseLost("graph run: another worker took over its lease")

    with pytest.raises(LeaseLost):
        await runner.run(task, guard)
    assert len(CALLS) == 1
    first = CALLS[0]
    run = await store.get(graph_run_id_for("fan-lease"), GraphRun)
    assert run is not None and run.status == "running"
    names = [type(e).__name__ for e in await store.events(run.id)]
    assert names.count("StepFinished") == 1 and "StepFailed" not in names
    outcome = await runner.run(task)
    assert outcome.status == "completed" and outcome.steps == len(CALLS)
    assert CALLS.count(first) == 1  # the recorded step was not run again


async def test_a_pause_is_resumed_by_a_new_runner_once(
    store: AsyncEventStore, settings: Settings
) -> None:
    paused = await runner_on(store, settings).run(
        RunGraph(task_id="ask-1", graph="approval", inputs="the plan")
    )
    assert paused.status == "paused"
    assert paused.waiting_for is not None and paused.waiting_for.node == "approve"
    # "Days later", on another worker: a new store object and runner.
    later_store = AsyncEventStore(EventStore(settings), 2, retry_s=0)
    try:
        later = runner_on(later_store, settings)
        resume = ResumeGraph(task_id="ask-1", resume_id="resume-1", input="yes")
        done = await later.resume(resume)
        assert (done.status, done.output) == ("completed", "published (draft of the plan: yes)")
        assert await later.resume(resume) == done  # the same resume again: applied once
        with pytest.raises(GraphRejected) as finished:
            await later.resume(ResumeGraph(task_id="ask-1", resume_id="resume-2", input="no"))
        assert finished.value.kind == ErrorKind.RUN_FINISHED
        events = await later_store.events(graph_run_id_for("ask-1"))
    finally:
        later_store.close()
    assert sum(isinstance(e, GraphRun.GraphResumed) for e in events) == 1


async def test_an_input_of_the_wrong_type_pauses_again_saying_why(
    store: AsyncEventStore, settings: Settings
) -> None:
    runner = runner_on(store, settings)
    await runner.run(RunGraph(task_id="ask-2", graph="approval", inputs="x"))
    again = await runner.resume(ResumeGraph(task_id="ask-2", resume_id="r-1", input=[1, 2]))
    assert again.status == "paused" and again.waiting_for is not None
    assert "invalid_input" in again.waiting_for.prompt
    done = await runner.resume(ResumeGraph(task_id="ask-2", resume_id="r-2", input="ok"))
    assert done.status == "completed"


async def test_cancel_ends_a_paused_run_and_unknown_runs_are_rejected(
    store: AsyncEventStore, settings: Settings
) -> None:
    runner = runner_on(store, settings)
    await runner.run(RunGraph(task_id="ask-3", graph="approval", inputs="x"))
    cancelled = await runner.cancel(CancelGraph(task_id="ask-3", reason="not needed"))
    assert cancelled.status == "failed" and cancelled.error is not None
    assert (cancelled.error.kind, cancelled.error.message) == ("cancelled", "not needed")
    for call in (
        runner.resume(ResumeGraph(task_id="ask-3", resume_id="r-9", input="yes")),
        runner.cancel(CancelGraph(task_id="ask-3")),
    ):
        with pytest.raises(GraphRejected) as rejected:
            await call
        assert rejected.value.kind == ErrorKind.RUN_FINISHED
    with pytest.raises(GraphRejected) as unknown:
        await runner.resume(ResumeGraph(task_id="nobody", resume_id="r-1", input="yes"))
    assert unknown.value.kind == ErrorKind.UNKNOWN_RUN


async def test_a_resume_after_the_runs_deadline_ends_it_as_deadline_exceeded(
    store: AsyncEventStore, settings: Settings
) -> None:
    """The deadline is checked before every live step: an approval that comes after it
    ends the run, and the step waiting for it does not run."""
    runner = runner_on(store, settings)
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    paused = await runner.run(
        RunGraph(task_id="ask-4", graph="approval", inputs="x", deadline=deadline)
    )
    assert paused.status == "paused"
    await asyncio.sleep(1.2)
    CALLS.clear()
    late = await runner.resume(ResumeGraph(task_id="ask-4", resume_id="r-1", input="yes"))
    assert late.status == "failed" and late.error is not None
    assert late.error.kind == "deadline_exceeded" and "before step approve" in late.error.message
    assert CALLS == []


async def test_a_cycle_fails_at_its_step_bound(store: AsyncEventStore, settings: Settings) -> None:
    outcome = await runner_on(store, settings).run(
        RunGraph(task_id="loop-1", graph="cycle", inputs=0)
    )
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.kind == "step_limit_exceeded"
    assert "bound of 30 steps" in outcome.error.message


async def test_unknown_graphs_and_unfit_inputs_are_rejected_before_anything_is_recorded(
    store: AsyncEventStore, settings: Settings
) -> None:
    runner = runner_on(store, settings)
    with pytest.raises(GraphRejected, match="unknown graph 'nope'") as unknown:
        await runner.run(RunGraph(task_id="g-1", graph="nope"))
    assert unknown.value.kind == ErrorKind.UNKNOWN_GRAPH
    with pytest.raises(GraphRejected, match="inputs do not fit graph 'review'") as unfit:
        await runner.run(RunGraph(task_id="g-2", graph="review", inputs={"customer": 1}))
    assert unfit.value.kind == ErrorKind.INVALID_PAYLOAD
    assert await store.get(graph_run_id_for("g-2"), GraphRun) is None
