"""Workflows (graph runs that dispatch child agent tasks) recorded in memory by the real
executor, without NATS: each dispatch is recorded as the runner records it, and each
child's outcome comes from a function of the test's choosing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic_graph import GraphBuilder, StepContext

from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.domain.tasks import RunError, RunOutcome
from agentledger.handlers.graphs.executor import (
    GraphExecutor,
    GraphWaitingForChildren,
    call_agents,
)

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]
"""A dispatched child entry -> its `RunOutcome` as JSON (None: it has not ended yet)."""

# Two sequential dispatches: a fan-out to every [agent, prompt] pair, then one request
# to `editor` with the answers that came back.
w = GraphBuilder(input_type=list[list[str]], output_type=str)


@w.step
async def research(ctx: StepContext[None, None, list[list[str]]]) -> list[str]:
    outcomes = await call_agents([(agent, prompt) for agent, prompt in ctx.inputs])
    return [str(o.output) for o in outcomes if o.status == "completed"]


@w.step
async def edit(ctx: StepContext[None, None, list[str]]) -> str:
    (outcome,) = await call_agents([("editor", "merge: " + " | ".join(ctx.inputs))])
    return str(outcome.output) if outcome.status == "completed" else "no edit"


w.add(
    w.edge_from(w.start_node).to(research),
    w.edge_from(research).to(edit),
    w.edge_from(edit).to(w.end_node),
)
two_step_graph = w.build()
"""research (fan-out) -> edit (one child) -> end."""


def completed(child: dict[str, Any]) -> dict[str, Any]:
    """Every child completes, answering `<agent> did: <prompt>` in 5 ms."""
    return RunOutcome(
        task_id=child["task_id"],
        agent=child["agent"],
        status="completed",
        output=f"{child['agent']} did: {child['prompt']}",
        duration_ms=5.0,
    ).model_dump(mode="json")


def failing(*agents: str) -> Answer:
    """Children of `agents` fail (model_error); the others complete."""

    def answer(child: dict[str, Any]) -> dict[str, Any]:
        if child["agent"] not in agents:
            return completed(child)
        return RunOutcome(
            task_id=child["task_id"],
            agent=child["agent"],
            status="failed",
            error=RunError(kind="model_error", message=f"{child['agent']} is down"),
            duration_ms=7.0,
        ).model_dump(mode="json")

    return answer


async def recorded_workflow(
    inputs: list[list[str]],
    answer: Answer = completed,
    *,
    task_id: str = "wf-1",
    graph: Any = two_step_graph,
    name: str = "relay",
) -> tuple[GraphRun, list[Any]]:
    """Run `graph` on `inputs` to its end (or until a child has no outcome yet): the run
    and every event it recorded, in order."""
    run = GraphRun(
        task_id=task_id,
        graph=name,
        inputs=inputs,
        state=None,
        metadata={},
        max_steps=100,
        deadline=None,
    )
    stored = list(run.collect_events())

    async def save() -> None:
        stored.extend(run.collect_events())

    while True:
        executor = GraphExecutor(graph, run, GraphHistory.fold(stored), save=save)
        try:
            output = await executor.execute(inputs)
        except GraphWaitingForChildren as waiting:
            run.dispatch_children(waiting.key, waiting.node_id, waiting.children)
            stored.extend(run.collect_events())
            for child in waiting.children:
                outcome = answer(child)
                if outcome is None:
                    return run, stored
                run.finish_child(child["task_id"], outcome)
                stored.extend(run.collect_events())
            continue
        run.complete(executor.dump_output(output), duration_ms=12.5)
        stored.extend(run.collect_events())
        return run, stored
