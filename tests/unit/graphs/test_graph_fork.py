"""Forks of graph runs: the copied steps are served, the rest runs live, from the state
at the checkpoint; forks of forks start at their own fork point or later."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from unit.graphs.test_graph_replay import catalog

from agentledger.domain.fork import ForkError
from agentledger.domain.graphs.fork import checkpoints
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.graphs.tasks import ResumeGraph, RunGraph
from agentledger.domain.ids import graph_run_id_for
from agentledger.handlers.graphs.fork import fork_graph_run
from agentledger.handlers.graphs.runner import GraphRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from support.sample_graphs import CALLS

pytestmark = pytest.mark.asyncio


@pytest.fixture
def store() -> Iterator[AsyncEventStore]:
    store = AsyncEventStore(EventStore.in_memory(), 2, retry_s=0)
    yield store
    store.close()


async def test_a_fork_inside_a_fan_out_runs_only_what_the_checkpoint_lacks(
    store: AsyncEventStore,
) -> None:
    runner = GraphRunner(store=store, catalog=catalog())
    parent = await runner.run(RunGraph(task_id="p", graph="fan", inputs=10))
    events = await store.events(graph_run_id_for("p"))
    finished = [e for e in events if isinstance(e, GraphRun.StepFinished)]
    at = next(e for e in finished if e.node_id in ("b1", "b2", "b3"))  # first branch done
    CALLS.clear()
    result = await fork_graph_run(store, runner, graph_run_id_for("p"), at=at.originator_version)
    assert result.outcome.status == "completed"
    assert sorted(result.outcome.output["items"]) == sorted(parent.output["items"])  # any order
    copied = {e.node_id for e in finished if e.originator_version <= at.originator_version}
    assert copied == {"ingest", "size", "prep", at.node_id}
    ran = {c.split(":")[0] for c in CALLS}
    assert not ran & copied  # served from the copies
    assert {"b1", "b2", "b3"} - {at.node_id} <= ran and "finish" in ran
    fork = await store.events(graph_run_id_for(result.task_id))
    assert (fork[0].parent_run_id, fork[0].fork_at) == (
        str(graph_run_id_for("p")),
        at.originator_version,
    )

    # A fork of the fork: at its own fork point or later, never at the copies.
    points = [v for v, _ in checkpoints(fork)]
    assert points[0] == at.originator_version and min(points) == at.originator_version
    with pytest.raises(ForkError, match="fork at one of"):
        await fork_graph_run(store, runner, graph_run_id_for(result.task_id), at=1)
    again = await fork_graph_run(
        store, runner, graph_run_id_for(result.task_id), at=at.originator_version
    )
    assert again.outcome.status == "completed"


async def test_a_fork_before_a_pause_pauses_again_and_resumes(store: AsyncEventStore) -> None:
    runner = GraphRunner(store=store, catalog=catalog())
    await runner.run(RunGraph(task_id="a", graph="approval", inputs="memo"))
    await runner.resume(ResumeGraph(task_id="a", input="yes", resume_id="r1"))
    events = await store.events(graph_run_id_for("a"))
    draft = next(e for e in events if isinstance(e, GraphRun.StepFinished))
    CALLS.clear()
    fork = await fork_graph_run(
        store, runner, graph_run_id_for("a"), at=draft.originator_version, task_id="a-f"
    )
    assert fork.outcome.status == "paused" and CALLS == []  # draft served; no input yet
    done = await runner.resume(ResumeGraph(task_id="a-f", input="no", resume_id="r2"))
    assert done.output == "published (draft of memo: no)" and CALLS == ["approve", "publish"]
