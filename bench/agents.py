"""Benchmark agents: the `calculator` shape (model -> tool -> model) on a slow model.

`sleepy_calculator` answers like `agentledger.catalog.example_agents.calculator`, but its model
sleeps `SLEEP_S` (1 s) before every response, like a remote LLM that takes a second to
answer. A run is two model responses, so it takes 2 s plus the framework's overhead.
The sleep is an `asyncio.sleep`: the runs overlap, as they would on a real provider.
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agentledger.catalog.example_agents import add, calculator_reply, multiply

__all__ = ["SLEEP_S", "sleepy_calculator"]

SLEEP_S = 1.0
"""Seconds the model takes per response."""


async def sleepy_calculator_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await asyncio.sleep(SLEEP_S)
    return calculator_reply(messages)


sleepy_calculator = Agent(
    FunctionModel(sleepy_calculator_model, model_name="sleepy-calculator-fn"),
    name="sleepy_calculator",
    instructions="You are a calculator. Use the tools for arithmetic.",
    tools=[add, multiply],
)
