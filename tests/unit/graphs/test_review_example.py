"""The catalog's example graph (the scope document's review flow) takes each branch for
the right input, run by the durable executor with its agent step on the real example
agent (the worker's recorded agent runs come in with graph intake)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from agentledger.catalog.example_agents import risk_analyst
from agentledger.catalog.example_graphs import Job, Transactions, pipeline, review
from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.handlers.graphs.executor import GraphExecutor
from support.sample_graphs import recorded

pytestmark = pytest.mark.asyncio


async def run_review(amounts: list[float]) -> tuple[Any, list[Any], list[str]]:
    run = GraphRun(
        task_id="review-1",
        graph="review",
        inputs={"customer": "acme", "amounts": amounts},
        state=None,
        metadata={},
        max_steps=20,
        deadline=None,
    )
    stored = list(run.collect_events())
    agent_tasks: list[str] = []

    async def save() -> None:
        stored.extend(run.collect_events())

    async def agent_runner(agent: str, prompt: str, graph_task_id: str, key: str) -> Any:
        assert agent == "risk_analyst"
        agent_tasks.append(f"{graph_task_id} {key}")
        return (await risk_analyst.run(prompt)).output

    executor = GraphExecutor(
        review, run, GraphHistory.fold(stored), save=save, agent_runner=agent_runner
    )
    output = await executor.execute(Transactions(customer="acme", amounts=amounts))
    return output, stored, agent_tasks


async def test_a_large_total_is_escalated() -> None:
    output, events, agent_tasks = await run_review([9000, 6000, -5])
    assert (output.customer, output.decision, output.risk) == ("acme", "escalated", 0.79)
    branches = [e.destination for e in events if isinstance(e, GraphRun.BranchTaken)]
    assert branches == ["escalate"]
    assert GraphHistory.fold(events).path == ["prepare", "analyse", "escalate"]
    assert GraphHistory.fold(events).state["dropped"] == 1
    assert agent_tasks == ["review-1 __start__/prepare/analyse"]


async def test_usual_amounts_are_approved() -> None:
    output, events, _ = await run_review([120, 80])
    assert (output.decision, output.risk) == ("approved", 0.05)
    branches = [e.destination for e in events if isinstance(e, GraphRun.BranchTaken)]
    assert branches == ["approve"]


async def test_the_pipeline_example_says_which_process_ran_each_step() -> None:
    _, events, output = await recorded(pipeline, "pipeline", Job(pause_s=0))
    assert output == {name: f"pid {os.getpid()}" for name in ("fetch", "enrich", "deliver")}
    assert [e.node_id for e in events if isinstance(e, GraphRun.StepFinished)] == [
        "fetch",
        "enrich",
        "deliver",
    ]
