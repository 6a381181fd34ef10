"""Graph definitions for bench/graph.py: a 10-step line, and a fan-out of 8 parallel
agent steps on a model that takes 1 s (durable: `agent_step`; in memory: `agent.run`)."""

from __future__ import annotations

import asyncio
import itertools

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_graph import GraphBuilder, StepContext, reduce_list_append

from agentledger.handlers.graphs import agent_step

STEPS = 10
FANOUT = 8


def ten_steps() -> object:
    g = GraphBuilder(input_type=int, output_type=int)
    steps = []
    for i in range(STEPS):

        async def step(ctx: StepContext[None, None, int]) -> int:
            return ctx.inputs + 1

        step.__name__ = f"step{i}"
        steps.append(g.step(step))
    g.add(g.edge_from(g.start_node).to(steps[0]))
    for a, b in itertools.pairwise(steps):
        g.add(g.edge_from(a).to(b))
    g.add(g.edge_from(steps[-1]).to(g.end_node))
    return g.build()


line = ten_steps()


async def _slow_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await asyncio.sleep(1.0)
    return ModelResponse(parts=[TextPart("looked")])


slow_agent = Agent(FunctionModel(_slow_model, model_name="slow-fn"), name="slow")


def fanout(durable: bool) -> object:
    g = GraphBuilder(input_type=list[str], output_type=list[str])

    @g.step
    async def look(ctx: StepContext[None, None, str]) -> str:
        if durable:
            return str(await agent_step("slow", f"look at {ctx.inputs}"))
        return (await slow_agent.run(f"look at {ctx.inputs}")).output

    gathered = g.join(reduce_list_append, initial_factory=list[str], node_id="gathered")
    g.add(
        g.edge_from(g.start_node).map(fork_id="each").to(look),
        g.edge_from(look).to(gathered),
        g.edge_from(gathered).to(g.end_node),
    )
    return g.build()


fan_durable = fanout(durable=True)
fan_memory = fanout(durable=False)
