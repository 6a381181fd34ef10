"""Agents and a graph for `bench/orchestration.py` (importable by worker processes as
`bench.workflows`)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_graph import GraphBuilder, StepContext

from agentledger.handlers.graphs.executor import call_agents

# mypy reads pydantic-graph's StepContext as not generic.
# mypy: disable-error-code="type-arg"

SLOW_S = 1.0


def _prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


async def _quick(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart(f"ok: {_prompt(messages)}")])


async def _slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await asyncio.sleep(SLOW_S)
    return ModelResponse(parts=[TextPart(f"ok: {_prompt(messages)}")])


quick = Agent(FunctionModel(_quick, model_name="quick-fn"), name="quick")
"""Answers at once (one model call): what a dispatched child costs on its own."""
slow = Agent(FunctionModel(_slow, model_name="slow-fn"), name="slow")
"""A model that takes 1 s."""


class Fan(BaseModel):
    agent: str
    n: int


g = GraphBuilder(input_type=Fan, output_type=dict[str, Any])


@g.step
async def fan_out(ctx: StepContext[None, None, Fan]) -> dict[str, Any]:
    outcomes = await call_agents([(ctx.inputs.agent, f"part {i}") for i in range(ctx.inputs.n)])
    done = sum(1 for o in outcomes if o.status == "completed")
    return {"children": len(outcomes), "completed": done}


g.add(g.edge_from(g.start_node).to(fan_out), g.edge_from(fan_out).to(g.end_node))
fan = g.build()
"""Fans one prompt per child out to `n` tasks of `agent` and counts the completed."""

CATALOG = """
[agents.quick]
ref = "bench.workflows:quick"

[agents.slow]
ref = "bench.workflows:slow"

[graphs.fan]
ref = "bench.workflows:fan"
max_steps = 10
"""
