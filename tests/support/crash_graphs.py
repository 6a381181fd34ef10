"""Graphs for crash tests: every step journals its start and its end (see
`support.agents.journal`), and the step named in `AGENTLEDGER_TEST_GRAPH_PAUSE_STEP`
sleeps there for a while, a window for a SIGKILL."""

from __future__ import annotations

import asyncio
import os

from pydantic_graph import GraphBuilder, StepContext, reduce_list_append

from agentledger.handlers.graphs import agent_step
from support.agents import journal

PAUSE_STEP_ENV = "AGENTLEDGER_TEST_GRAPH_PAUSE_STEP"


async def _effect(name: str, value: str) -> str:
    journal(f"step-start {name}")
    if os.environ.get(PAUSE_STEP_ENV) == name:
        await asyncio.sleep(60)
    journal(f"step-done {name}")
    return f"{value}>{name}"


# Five steps in a row.
line = GraphBuilder(input_type=str, output_type=str)


def _line_step(name: str):  # type: ignore[no-untyped-def]
    async def step(ctx: StepContext[None, None, str]) -> str:
        return await _effect(name, ctx.inputs)

    step.__name__ = name
    return line.step(step)


s1, s2, s3, s4, s5 = (_line_step(f"step{i}") for i in range(1, 6))
line.add(
    line.edge_from(line.start_node).to(s1),
    line.edge_from(s1).to(s2),
    line.edge_from(s2).to(s3),
    line.edge_from(s3).to(s4),
    line.edge_from(s4).to(s5),
    line.edge_from(s5).to(line.end_node),
)
five_steps = line.build()


# A fork of three branches joined, then one more step.
fork = GraphBuilder(input_type=str, output_type=list[str])


@fork.step
async def split(ctx: StepContext[None, None, str]) -> str:
    return await _effect("split", ctx.inputs)


def _branch(name: str):  # type: ignore[no-untyped-def]
    async def branch(ctx: StepContext[None, None, str]) -> str:
        return await _effect(name, ctx.inputs)

    branch.__name__ = name
    return fork.step(branch)


fast1, fast2, slow = _branch("fast1"), _branch("fast2"), _branch("slow")
joined = fork.join(reduce_list_append, initial_factory=list[str], node_id="joined")


@fork.step
async def after(ctx: StepContext[None, None, list[str]]) -> list[str]:
    await _effect("after", "")
    return sorted(ctx.inputs)


fork.add(
    fork.edge_from(fork.start_node).to(split),
    fork.edge_from(split).to(fast1, fast2, slow, fork_id="three"),
    fork.edge_from(fast1, fast2, slow).to(joined),
    fork.edge_from(joined).to(after),
    fork.edge_from(after).to(fork.end_node),
)
forked = fork.build()


# A function step, an agent step (the `effect` agent: a model call, a tool, a model
# call), and one more step.
agentic_builder = GraphBuilder(input_type=str, output_type=str)


@agentic_builder.step
async def before(ctx: StepContext[None, None, str]) -> str:
    return await _effect("before", ctx.inputs)


@agentic_builder.step
async def ask(ctx: StepContext[None, None, str]) -> str:
    journal("step-start ask")
    answer = await agent_step("effect", "job-1")
    journal("step-done ask")
    return f"{ctx.inputs}>{answer}"


@agentic_builder.step
async def last(ctx: StepContext[None, None, str]) -> str:
    return await _effect("last", ctx.inputs)


agentic_builder.add(
    agentic_builder.edge_from(agentic_builder.start_node).to(before),
    agentic_builder.edge_from(before).to(ask),
    agentic_builder.edge_from(ask).to(last),
    agentic_builder.edge_from(last).to(agentic_builder.end_node),
)
agentic = agentic_builder.build()
