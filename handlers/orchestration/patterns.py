"""The orchestration patterns as small helpers that build a durable graph.

Each helper returns a pydantic-graph `Graph` whose steps dispatch agents as child tasks
(`call_agents`): any worker runs them, the workflow waits without holding a worker slot,
and every request and response is recorded and published on
`<prefix>.messages.<workflow>.<receiver>`. Register the graph in the catalog (`[graphs]`
with a `ref`, or declare it as `[workflows.<name>]`, see `handlers/orchestration/catalog.py`)
and start it with a `RunGraph` task on `<prefix>.tasks.graph.<name>`.

- `sequential([a, b, c])`: a chain; each agent gets the previous agent's output.
- `parallel([a, b, c], merge=...)`: a fan-out (one broadcast message: every agent gets
  the same prompt and answers it), then
  a merge by a merger agent (a name) or a function of the outcomes. `policy` decides
  what a failed child means: `fail_fast` fails the step at the first failure and
  cancels the others; `best_effort` merges what completed and lists the failures.
- `supervisor(boss, [w1, w2], max_rounds=...)`: the supervisor agent answers with a
  `Delegate` (a worker and an instruction) or a `FinalAnswer`; the workflow dispatches
  each delegation and gives the worker's answer back to the supervisor, in the
  supervisor's own conversation (a session per workflow), until it answers. After
  `max_rounds` supervisor turns without an answer the run fails with
  `step_limit_exceeded`.
- `pipeline([(extract, Extracted), (transform, Rows), (load, Report)])`: stages whose
  outputs are validated against their types before the next stage gets them (as JSON).
- `handoff(triage, [billing, support])`: the triage agent answers, or hands off
  (`Handoff(to=...)`) to a specialist, which continues the same conversation (the
  session), history included.

Every helper takes `step_timeout_s` (each child must finish within it; one that does not
fails with `deadline_exceeded`) and, where it matters, a fail policy. A child that did
not complete fails the step (`ChildTaskFailed`, naming it and why), except under
`best_effort`. The agents' names are checked when the catalog loads.
"""

# mypy reads pydantic-graph's StepContext and GraphBuilder as not generic (their TypeVars
# use infer_variance): the annotations below are for readers and for pydantic.
# mypy: disable-error-code="type-arg, attr-defined, index, arg-type"

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_graph import Graph, GraphBuilder, StepContext

from agentledger.domain.errors import first_problem
from agentledger.domain.orchestration.decisions import (
    Delegate,
    FinalAnswer,
    Handoff,
    parse_decision,
)
from agentledger.domain.tasks import RunOutcome
from agentledger.handlers.graphs.executor import (
    ChildTaskFailed,
    StepLimitExceeded,
    call_agents,
    current_task_id,
)

__all__ = [
    "ConversationInput",
    "FailPolicy",
    "StageOutputInvalid",
    "handoff",
    "parallel",
    "pipeline",
    "sequential",
    "supervisor",
]

FailPolicy = Literal["fail_fast", "best_effort"]
Merge = str | Callable[[list[RunOutcome]], Any] | None


class StageOutputInvalid(ValueError):
    """A pipeline stage's output does not fit the type declared for it."""


class ConversationInput(BaseModel):
    """A workflow input that names the conversation to continue (handoff, supervisor)."""

    prompt: str
    session_id: str | None = None


def as_prompt(value: Any) -> str:
    """An output as the next agent's prompt: text as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def workflow_session(role: str) -> str:
    """A session id of this workflow's own (for its `role`), valid as an id."""
    digest = hashlib.sha256(current_task_id().encode()).hexdigest()[:24]
    return f"wf-{digest}-{role}"


def _completed(outcome: RunOutcome, agent: str) -> Any:
    if outcome.status != "completed":
        raise ChildTaskFailed([outcome], [agent])
    return outcome.output


def _step_id(i: int, agent: str) -> str:
    return f"{i + 1}_{agent}"


def _on_decision(g: Any, node_id: str, kind: str, then: Any, otherwise: Any) -> Any:
    """A decision on a deciding agent's step output (`{"kind": ..., "decision": ...}`):
    to `then` for a decision of `kind` (labelled with it), else to `otherwise`."""
    return (
        g.decision(node_id=node_id)
        .branch(g.match(dict, matches=lambda d: d.get("kind") == kind).label(kind.lower()).to(then))
        .branch(g.match(dict).label("answer").to(otherwise))
    )


# -- sequential -------------------------------------------------------------------------


def sequential(agents: Sequence[str], *, step_timeout_s: float | None = None) -> Graph:
    """A chain: the input (a prompt) goes to the first agent, each output to the next;
    the last agent's output is the workflow's."""
    if not agents:
        raise ValueError("a sequential workflow needs at least one agent")
    g: GraphBuilder[None, None, str, Any] = GraphBuilder(input_type=str, output_type=Any)
    steps = [
        g.step(_chain_step(agent, step_timeout_s), node_id=_step_id(i, agent))
        for i, agent in enumerate(agents)
    ]
    g.add(g.edge_from(g.start_node).to(steps[0]))
    for a, b in itertools.pairwise(steps):
        g.add(g.edge_from(a).to(b))
    g.add(g.edge_from(steps[-1]).to(g.end_node))
    return g.build()


def _chain_step(agent: str, timeout_s: float | None) -> Any:
    async def step(ctx: StepContext[None, None, Any]) -> Any:
        [outcome] = await call_agents([(agent, as_prompt(ctx.inputs))], timeout_s=timeout_s)
        return _completed(outcome, agent)

    return step


# -- parallel -----------------------------------------------------------------------------


def parallel(
    agents: Sequence[str],
    *,
    merge: Merge = None,
    policy: FailPolicy = "fail_fast",
    step_timeout_s: float | None = None,
) -> Graph:
    """Every agent gets the input prompt at once; then `merge`:
    - a merger agent's name: it gets `{"results": {agent: output}, "failed": [...]}` as
      JSON and its output is the workflow's (an agent named twice is `agent#<n>`, its
      place in `agents` from 1);
    - a function of the outcomes (in `agents` order) -> the output (keep it pure: it
      runs again on a replay);
    - None: the output is that results object itself.
    The fan-out step's output records the policy and the failures."""
    if not agents:
        raise ValueError("a parallel workflow needs at least one agent")
    if policy not in ("fail_fast", "best_effort"):
        raise ValueError(f"policy must be fail_fast or best_effort, not {policy!r}")
    g: GraphBuilder[None, None, str, Any] = GraphBuilder(input_type=str, output_type=Any)

    async def fan_out(ctx: StepContext[None, None, str]) -> dict[str, Any]:
        outcomes = await call_agents(
            [(agent, ctx.inputs) for agent in agents],
            kind="broadcast",  # one message to all of them
            fail_fast=policy == "fail_fast",
            timeout_s=step_timeout_s,
        )
        results = {}
        failed = []
        for i, (agent, outcome) in enumerate(zip(agents, outcomes, strict=True)):
            name = agent if list(agents).count(agent) == 1 else f"{agent}#{i + 1}"
            if outcome.status == "completed":
                results[name] = outcome.output
            else:
                error = outcome.error
                failed.append(
                    {
                        "agent": agent,
                        "task_id": outcome.task_id,
                        "status": outcome.status,
                        "error": error.model_dump(mode="json") if error else None,
                    }
                )
        if not results:
            raise ChildTaskFailed([o for o in outcomes], list(agents))
        return {
            "policy": policy,
            "results": results,
            "failed": failed,
            "outcomes": [o.model_dump(mode="json") for o in outcomes],
        }

    async def merged(ctx: StepContext[None, None, dict[str, Any]]) -> Any:
        shown = {"results": ctx.inputs["results"], "failed": ctx.inputs["failed"]}
        if isinstance(merge, str):
            [outcome] = await call_agents([(merge, as_prompt(shown))], timeout_s=step_timeout_s)
            return _completed(outcome, merge)
        if merge is not None:
            outcomes = [RunOutcome.model_validate(o) for o in ctx.inputs["outcomes"]]
            return merge(outcomes)
        return shown

    first = g.step(fan_out, node_id="fan_out")
    last = g.step(merged, node_id="merge" if merge is not None else "collect")
    g.add(
        g.edge_from(g.start_node).to(first),
        g.edge_from(first).to(last),
        g.edge_from(last).to(g.end_node),
    )
    return g.build()


# -- supervisor ---------------------------------------------------------------------------


@dataclass
class SupervisorState:
    task: str = ""
    session_id: str | None = None
    rounds: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    """The last delegation's result (what the supervisor is told next)."""
    delegations: list[dict[str, Any]] = field(default_factory=list)


def supervisor(
    boss: str,
    workers: Sequence[str],
    *,
    max_rounds: int = 8,
    step_timeout_s: float | None = None,
) -> Graph:
    """A supervisor loop. The supervisor agent (`output_type=[Delegate, FinalAnswer]`)
    is asked the input; a `Delegate` dispatches that worker with the instruction, and
    the worker's answer (or failure) is the supervisor's next prompt, in the same
    conversation; a `FinalAnswer` (or plain text) ends the workflow with it. A
    delegation to an agent not in `workers` is answered to the supervisor as an error.
    More than `max_rounds` supervisor turns fail the run (`step_limit_exceeded`)."""
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")
    allowed = list(workers)
    g: GraphBuilder[SupervisorState, None, str | ConversationInput, Any] = GraphBuilder(
        state_type=SupervisorState, input_type=str | ConversationInput, output_type=Any
    )

    async def supervise(ctx: StepContext[SupervisorState, None, Any]) -> dict[str, Any]:
        state = ctx.state
        if state.rounds >= max_rounds:
            raise StepLimitExceeded(
                f"supervisor {boss!r} did not give a final answer within {max_rounds} rounds"
                f" ({len(state.delegations)} delegations)"
            )
        if state.rounds == 0:
            given = ctx.inputs
            task = given if isinstance(given, str) else given.prompt
            session = (
                given.session_id
                if isinstance(given, ConversationInput) and given.session_id
                else workflow_session("supervisor")
            )
            prompt = task
        else:
            task, session = state.task, state.session_id
            prompt = as_prompt(state.last)
        [outcome] = await call_agents(
            [(boss, prompt)], session_id=session, timeout_s=step_timeout_s
        )
        decision = parse_decision(_completed(outcome, boss))
        state.task, state.session_id = task, session
        state.rounds += 1
        return {"decision": decision.model_dump(mode="json"), "kind": type(decision).__name__}

    async def delegate(ctx: StepContext[SupervisorState, None, dict[str, Any]]) -> None:
        order = Delegate.model_validate(ctx.inputs["decision"])
        if order.worker not in allowed:
            ctx.state.last = {
                "error": f"no worker named {order.worker!r}; the workers are {allowed}"
            }
            return
        [outcome] = await call_agents([(order.worker, order.instruction)], timeout_s=step_timeout_s)
        if outcome.status == "completed":
            result: dict[str, Any] = {"worker": order.worker, "result": outcome.output}
        else:
            error = outcome.error
            result = {
                "worker": order.worker,
                "error": f"{error.kind}: {error.message}" if error else outcome.status,
            }
        ctx.state.last = result
        ctx.state.delegations.append({"worker": order.worker, "instruction": order.instruction})

    async def answer(ctx: StepContext[SupervisorState, None, dict[str, Any]]) -> Any:
        decision = ctx.inputs["decision"]
        return decision.get("answer") if isinstance(decision, dict) else decision

    supervise_step = g.step(supervise, node_id="supervise")
    delegate_step = g.step(delegate, node_id="delegate")
    answer_step = g.step(answer, node_id="answer")
    g.add(
        g.edge_from(g.start_node).to(supervise_step),
        g.edge_from(supervise_step).to(
            _on_decision(g, "delegate_or_answer", "Delegate", delegate_step, answer_step)
        ),
        g.edge_from(delegate_step).to(supervise_step),
        g.edge_from(answer_step).to(g.end_node),
    )
    return g.build()


# -- pipeline -----------------------------------------------------------------------------


def pipeline(stages: Sequence[tuple[str, Any]], *, step_timeout_s: float | None = None) -> Graph:
    """Stages `(agent, output type)`: each stage's output must validate as its type (a
    pydantic model, or any type pydantic validates) before the next stage gets it as
    JSON; one that does not fails the run naming the stage and the first problem. The
    last stage's validated output (as JSON) is the workflow's."""
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    g: GraphBuilder[None, None, Any, Any] = GraphBuilder(input_type=Any, output_type=Any)
    steps = [
        g.step(_stage_step(i, agent, kind, step_timeout_s), node_id=_step_id(i, agent))
        for i, (agent, kind) in enumerate(stages)
    ]
    g.add(g.edge_from(g.start_node).to(steps[0]))
    for a, b in itertools.pairwise(steps):
        g.add(g.edge_from(a).to(b))
    g.add(g.edge_from(steps[-1]).to(g.end_node))
    return g.build()


def _stage_step(i: int, agent: str, kind: Any, timeout_s: float | None) -> Any:
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    name = getattr(kind, "__name__", str(kind))

    async def step(ctx: StepContext[None, None, Any]) -> Any:
        [outcome] = await call_agents([(agent, as_prompt(ctx.inputs))], timeout_s=timeout_s)
        output = _completed(outcome, agent)
        try:
            value = adapter.validate_python(output)
        except ValidationError as e:
            raise StageOutputInvalid(
                f"stage {i + 1} ({agent}) output does not fit {name}: {first_problem(e, 'output')}"
            ) from None
        return adapter.dump_python(value, mode="json")

    return step


# -- handoff ------------------------------------------------------------------------------


@dataclass
class HandoffState:
    prompt: str = ""
    session_id: str | None = None


def handoff(
    triage: str, specialists: Sequence[str], *, step_timeout_s: float | None = None
) -> Graph:
    """The triage agent (`output_type=[Handoff, FinalAnswer]`) gets the prompt in the
    conversation (the input's `session_id`, or one of this workflow's own); it answers,
    or hands off to a specialist, which gets the same prompt in the same conversation
    (so it sees the triage turn and everything before) and answers. A handoff to an
    agent not in `specialists` fails the run, naming it."""
    allowed = list(specialists)
    g: GraphBuilder[HandoffState, None, str | ConversationInput, Any] = GraphBuilder(
        state_type=HandoffState, input_type=str | ConversationInput, output_type=Any
    )

    async def triage_step(ctx: StepContext[HandoffState, None, Any]) -> dict[str, Any]:
        given = ctx.inputs
        prompt = given if isinstance(given, str) else given.prompt
        session = (
            given.session_id
            if isinstance(given, ConversationInput) and given.session_id
            else workflow_session("conversation")
        )
        [outcome] = await call_agents(
            [(triage, prompt)], session_id=session, timeout_s=step_timeout_s
        )
        decision = parse_decision(_completed(outcome, triage))
        if isinstance(decision, Handoff) and decision.to not in allowed:
            raise ValueError(
                f"triage {triage!r} handed off to {decision.to!r}; the specialists are {allowed}"
            )
        if isinstance(decision, Delegate):
            raise ValueError(f"triage {triage!r} answered with a Delegate; expected Handoff")
        ctx.state.prompt, ctx.state.session_id = prompt, session
        return {"decision": decision.model_dump(mode="json"), "kind": type(decision).__name__}

    async def specialist_step(ctx: StepContext[HandoffState, None, dict[str, Any]]) -> Any:
        to = Handoff.model_validate(ctx.inputs["decision"]).to
        [outcome] = await call_agents(
            [(to, ctx.state.prompt)],
            session_id=ctx.state.session_id,
            kind="handoff",
            timeout_s=step_timeout_s,
        )
        return _completed(outcome, to)

    async def answered(ctx: StepContext[HandoffState, None, dict[str, Any]]) -> Any:
        return FinalAnswer.model_validate(ctx.inputs["decision"]).answer

    first = g.step(triage_step, node_id="triage")
    special = g.step(specialist_step, node_id="specialist")
    done = g.step(answered, node_id="answered")
    g.add(
        g.edge_from(g.start_node).to(first),
        g.edge_from(first).to(_on_decision(g, "handoff_or_answer", "Handoff", special, done)),
        g.edge_from(special).to(g.end_node),
        g.edge_from(done).to(g.end_node),
    )
    return g.build()
