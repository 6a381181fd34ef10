"""The durable graph executor: record and serve, checkpoint per step, stable task keys.

A crash is simulated at every point of a recorded run: the run is rebuilt from the
first N stored events and executed again. Exactly the steps without a recorded finish
run live, each once; the output and the state come out as in the uninterrupted run."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.handlers.graphs.executor import (
    GraphDiverged,
    GraphExecutor,
    GraphPausedForInput,
    StepLimitExceeded,
    UnstorableValue,
)
from support import sample_graphs
from support.sample_graphs import (
    CALLS,
    CountFrom,
    approval_graph,
    countdown_graph,
    cycle_graph,
    fan_graph,
)

pytestmark = pytest.mark.asyncio


def start(graph_name: str, inputs: Any, max_steps: int = 100) -> GraphRun:
    return GraphRun(
        task_id=f"t-{graph_name}",
        graph=graph_name,
        inputs=inputs,
        state=None,
        metadata={},
        max_steps=max_steps,
        deadline=None,
    )


def rebuild(events: list[Any]) -> GraphRun:
    run: Any = None
    for e in events:
        run = e.mutate(run)
    assert isinstance(run, GraphRun)
    return run


async def execute(
    graph: Any, run: GraphRun, events: list[Any], stored: list[Any], **kw: Any
) -> Any:
    """Execute on `run`, whose history is `events`; saved events go to `stored`."""

    async def save() -> None:
        stored.extend(run.collect_events())

    executor = GraphExecutor(graph, run, GraphHistory.fold(events), save=save, **kw)
    output = await executor.execute(run_inputs(events))
    return executor, output


def run_inputs(events: list[Any]) -> Any:
    started = events[0]
    assert isinstance(started, GraphRun.GraphStarted)
    return started.inputs


async def record(graph: Any, inputs: Any) -> tuple[list[Any], Any]:
    run = start("fan", inputs)
    stored = list(run.collect_events())
    _, output = await execute(graph, run, list(stored), stored)
    return stored, output


def finished_keys(events: list[Any]) -> list[str]:
    return [e.key for e in events if isinstance(e, GraphRun.StepFinished)]


@pytest.mark.parametrize("inputs", [7, 2], ids=["big-branch", "small-branch"])
async def test_a_rerun_from_every_checkpoint_runs_only_the_unfinished_steps(inputs: int) -> None:
    random.seed(inputs)
    CALLS.clear()
    events, output = await record(fan_graph, inputs)
    first_calls = list(CALLS)
    keys = finished_keys(events)
    assert len(keys) == len(set(keys)) == len(first_calls)  # one key per real execution
    final_state = GraphHistory.fold(events).state
    for n in range(1, len(events) + 1):
        random.seed(1000 + n)  # parallel branches finish in another order each time
        CALLS.clear()
        prefix = events[:n]
        done = set(finished_keys(prefix))
        stored: list[Any] = []
        executor, again = await execute(fan_graph, rebuild(prefix), prefix, stored)
        expected = [k for k in keys if k not in done]
        assert sorted(finished_keys(stored)) == sorted(expected), n
        assert len(CALLS) == len(expected), (n, CALLS, expected)  # each ran once
        assert Counter(executor.served) == Counter(k.rsplit("/", 1)[-1].split("#")[0] for k in done)
        gather_recorded = any(
            isinstance(e, GraphRun.JoinCompleted) and e.node_id == "gather" for e in prefix
        )
        if gather_recorded:
            assert again == output
        else:  # the join's order is the order branches finished in: a valid other run
            assert sorted(again["items"]) == sorted(output["items"])
        state = GraphHistory.fold(prefix + stored).state
        assert sorted(state["log"]) == sorted(final_state["log"])
        assert state["total"] == final_state["total"]


async def test_the_decision_takes_each_branch_for_the_right_input() -> None:
    big, _ = await record(fan_graph, 7)
    small, _ = await record(fan_graph, 2)
    taken = {
        name: [e.destination for e in events if isinstance(e, GraphRun.BranchTaken)]
        for name, events in (("big", big), ("small", small))
    }
    assert taken == {"big": ["prep"], "small": ["small"]}
    assert [e.branch for e in big if isinstance(e, GraphRun.BranchTaken)] == [0]


async def test_replay_of_a_finished_run_runs_nothing_and_gives_the_same_output() -> None:
    events, output = await record(fan_graph, 7)
    CALLS.clear()
    executor, again = await execute(fan_graph, rebuild(events), events, [], replay=True)
    assert CALLS == [] and executor.live == []
    assert again == output


async def test_replay_with_a_changed_decision_diverges_at_the_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, _ = await record(fan_graph, 7)

    # Recorded steps are served, so change the decision itself: "big" now goes to the
    # second branch.
    route = fan_graph.nodes["route"]
    monkeypatch.setattr(route.branches[0], "matches", lambda _value: False)
    monkeypatch.setattr(route.branches[1], "matches", lambda _value: True)
    CALLS.clear()
    with pytest.raises(GraphDiverged) as diverged:
        await execute(fan_graph, rebuild(events), events, [], replay=True)
    assert diverged.value.node_id == "route"
    assert "the record has branch 0 (to prep)" in str(diverged.value)
    assert CALLS == []


async def test_a_cycle_stops_at_the_step_bound() -> None:
    run = start("cycle", 0, max_steps=25)
    stored = list(run.collect_events())
    CALLS.clear()
    with pytest.raises(StepLimitExceeded, match="bound of 25 steps at count"):
        await execute(cycle_graph, run, list(stored), stored)
    assert CALLS == ["count"] * 25


async def test_a_pause_waits_for_input_and_a_resume_serves_it() -> None:
    run = start("approval", "the plan")
    stored = list(run.collect_events())
    CALLS.clear()
    with pytest.raises(GraphPausedForInput) as paused:
        await execute(approval_graph, run, list(stored), stored)
    assert paused.value.node_id == "approve"
    assert paused.value.prompt == {"question": "approve 'draft of the plan'?"}
    run.pause(paused.value.key, paused.value.node_id, paused.value.prompt)
    stored.extend(run.collect_events())

    # Later, in another process: the resume is recorded, and the run goes on.
    later = rebuild(stored)
    assert later.status == "paused"
    assert later.resume("yes, go", resume_id="r-1") is True
    assert later.resume("yes, go", resume_id="r-1") is False  # applied once
    stored.extend(later.collect_events())
    CALLS.clear()
    _, output = await execute(approval_graph, later, list(stored), stored)
    assert output == "published (draft of the plan: yes, go)"
    assert CALLS == ["approve", "publish"]  # the draft was served


async def test_the_sample_graph_renders_as_mermaid() -> None:
    mermaid = sample_graphs.fan_graph.render()
    assert "stateDiagram-v2" in mermaid and "route" in mermaid


async def test_a_basenode_graph_reruns_from_every_checkpoint_too() -> None:
    """BaseNode graphs run on the same builder machinery: each node's returned next node
    (or End) is recorded and served like any step output."""
    CALLS.clear()
    run = start("countdown", {"n": 4})
    events = list(run.collect_events())
    executor = GraphExecutor(
        countdown_graph, run, GraphHistory.fold(events), save=_saver(run, events)
    )
    output = await executor.execute(CountFrom(4))
    assert output == 4 + 3 + 2 + 1
    keys = finished_keys(events)
    assert len(keys) == len(CALLS) == 5
    for n in range(1, len(events) + 1):
        CALLS.clear()
        prefix = events[:n]
        stored: list[Any] = []
        replayed = rebuild(prefix)
        again = GraphExecutor(
            countdown_graph, replayed, GraphHistory.fold(prefix), save=_saver(replayed, stored)
        )
        assert await again.execute(CountFrom(4)) == output, n
        done = set(finished_keys(prefix))
        assert len(CALLS) == len([k for k in keys if k not in done]), n


def _saver(run: GraphRun, into: list[Any]) -> Any:
    async def save() -> None:
        into.extend(run.collect_events())

    return save


async def test_a_step_output_json_cannot_hold_fails_the_step_saying_why() -> None:
    """Regression: a step returning inf stored `inf` (text no JSON reader accepts, or
    null served back), so the run could never be re-executed or read by clients."""
    run = start("blow", 2.0)
    stored = list(run.collect_events())
    with pytest.raises(UnstorableValue, match="the step's output is inf, which JSON cannot hold"):
        await execute(sample_graphs.overflow_graph, run, list(stored), stored)
    failed = [e for e in stored if isinstance(e, GraphRun.StepFailed)]
    assert [f.node_id for f in failed] == ["blow_up"]
    assert not any(isinstance(e, GraphRun.StepFinished) for e in stored)
