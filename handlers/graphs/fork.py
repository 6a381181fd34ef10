"""Fork a graph run at a checkpoint and continue it live.

The fork is a new graph run (its own task id) whose first event names its parent and
the checkpoint (`parent_run_id`, `fork_at`), whose next events are copies of the
parent's up to there, and which `GraphRunner` then drives like any run: the copied
steps are served, the others run live - agent steps as new agent runs of the fork's own.
A fork that pauses is resumed like any graph run (`<prefix>.tasks.graph.resume`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from agentledger.domain.errors import first_problem
from agentledger.domain.fork import ForkError
from agentledger.domain.graphs.fork import plan_graph_fork
from agentledger.domain.graphs.run import GraphRun, copy_graph_steps
from agentledger.domain.graphs.tasks import GraphOutcome, RunGraph
from agentledger.handlers.fork import save_fork
from agentledger.handlers.graphs.replay import NotAGraphRun
from agentledger.handlers.graphs.runner import GraphRunner
from agentledger.infra.event_store import AsyncEventStore

__all__ = ["UNCHANGED", "GraphForkResult", "fork_graph_run"]

UNCHANGED: Any = object()
"""`state` / `inputs` not given: the parent's."""


@dataclass(frozen=True, kw_only=True)
class GraphForkResult:
    run_id: str
    task_id: str
    parent_run_id: str
    at: int
    outcome: GraphOutcome


def _validated(adapter: TypeAdapter[Any], value: Any, what: str) -> Any:
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except ValidationError as e:
        raise ForkError(
            f"the fork's {what} does not fit the graph: {first_problem(e, what)}"
        ) from None


async def fork_graph_run(
    store: AsyncEventStore,
    runner: GraphRunner,
    parent_run_id: UUID,
    *,
    at: int,
    state: Any = UNCHANGED,
    inputs: Any = UNCHANGED,
    task_id: str | None = None,
) -> GraphForkResult:
    """Fork graph run `parent_run_id` at checkpoint `at` (see
    `agentledger.domain.graphs.fork`), with another state or input if given, record it
    and drive it to its end or a pause. Given the `task_id` of the same fork started
    before (an interrupted `agentledger fork`), it continues that one."""
    parent = await store.events(parent_run_id)
    if not parent or not isinstance(parent[0], GraphRun.GraphStarted):
        raise NotAGraphRun(f"no graph run {parent_run_id} in the event store")
    started = parent[0]
    plan = plan_graph_fork(parent, at, new_inputs=inputs is not UNCHANGED)
    graph = runner.entry(started.graph).graph
    fork_state = plan.state
    if state is not UNCHANGED:
        fork_state = _validated(TypeAdapter(graph.state_type), state, "state")
    fork_inputs = started.inputs
    if inputs is not UNCHANGED:
        fork_inputs = _validated(TypeAdapter(graph.input_type), inputs, "input")
    fork_task = task_id or f"{started.task_id[:150]}-fork-{uuid.uuid4().hex[:8]}"
    # Validated (the task id too) before anything is recorded. The parent's deadline
    # belonged to the parent's task: a fork runs now.
    task = RunGraph.model_validate(
        {
            "task_id": fork_task,
            "graph": started.graph,
            "inputs": fork_inputs,
            "metadata": dict(started.metadata),
            "max_steps": started.max_steps,
        }
    )
    fork = GraphRun(
        task_id=fork_task,
        graph=started.graph,
        inputs=fork_inputs,
        state=fork_state,
        metadata=dict(started.metadata),
        max_steps=started.max_steps,
        deadline=None,
        parent_run_id=str(parent_run_id),
        fork_at=plan.at,
    )
    await save_fork(
        store,
        fork,
        fork_task,
        same_as=lambda first: (
            isinstance(first, GraphRun.GraphStarted)
            and (first.parent_run_id, first.fork_at, first.inputs, first.state)
            == (str(parent_run_id), plan.at, fork_inputs, fork_state)
        ),
        copy=lambda: copy_graph_steps(fork, plan.copied),
    )
    outcome = await runner.run(task)
    return GraphForkResult(
        run_id=str(fork.id),
        task_id=fork_task,
        parent_run_id=str(parent_run_id),
        at=plan.at,
        outcome=outcome,
    )
