"""Agents of varied shape for replay tests, and edited variants of the calculator.

- `planner`: two tool calls in parallel (they finish in the opposite order to the one
  they were asked in), then a third tool, then the answer.
- `picky`: its tool refuses the first arguments with `ModelRetry` (a tool retry).
- `counter`: structured output (`int`); its first answer fails validation (a model retry).
- `stubborn`: its answers never pass the output validator (fails after a retry).
- `half_broken`: two tool calls at once; one fails while the other still runs.
- `calculator_reworded` / `calculator_renamed` / `calculator_reschemed` /
  `calculator_off_by_one`: the example calculator with changed instructions, a renamed
  tool, a changed tool signature, a changed tool body.

The golden history (tests/fixtures/golden/history-format1.json) replays against
`planner`, `picky` and `counter`: change them only together with a new golden file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agentledger.catalog.example_agents import calculator_model
from agentledger.domain.tasks import RunAgent


def _returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    """The successful tool returns of the last request."""
    last = messages[-1]
    if not isinstance(last, ModelRequest):
        return []
    return [p for p in last.parts if isinstance(p, ToolReturnPart) and p.outcome == "success"]


def _retried(messages: list[ModelMessage]) -> bool:
    """Whether the last request asks the model to try again (a tool or output retry)."""
    last = messages[-1]
    return isinstance(last, ModelRequest) and any(
        isinstance(p, RetryPromptPart) or (isinstance(p, ToolReturnPart) and p.outcome == "retried")
        for p in last.parts
    )


async def _planner_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = _returns(messages)
    if not returned:
        return ModelResponse(
            parts=[
                ToolCallPart("lookup", {"city": "Paris"}),
                ToolCallPart("lookup", {"city": "Rome"}),
            ]
        )
    if returned[0].tool_name == "lookup":
        total = sum(float(p.content) for p in returned)
        return ModelResponse(parts=[ToolCallPart("convert", {"celsius": total})])
    return ModelResponse(parts=[TextPart(f"Together: {returned[0].content}")])


planner = Agent(FunctionModel(_planner_model, model_name="planner-fn"), name="planner")


@planner.tool_plain
async def lookup(city: str) -> float:
    """Temperature of a city."""
    # Paris answers later than Rome, so the results are stored in the other order.
    await asyncio.sleep(0.03 if city == "Paris" else 0)
    return {"Paris": 18.5, "Rome": 24.0}.get(city, 0.0)


@planner.tool_plain
async def convert(celsius: float) -> str:
    """Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:.1f}F"


async def _picky_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if _returns(messages):
        return ModelResponse(parts=[TextPart(f"level set: {_returns(messages)[0].content}")])
    level = 3 if _retried(messages) else 9
    return ModelResponse(parts=[ToolCallPart("set_level", {"level": level})])


picky = Agent(FunctionModel(_picky_model, model_name="picky-fn"), name="picky")


@picky.tool_plain
async def set_level(level: int) -> str:
    """Set the level (1 to 5)."""
    if level > 5:
        raise ModelRetry("level must be between 1 and 5")
    return f"level={level}"


async def _counter_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    tool = info.output_tools[0].name
    value = 3 if _retried(messages) else "many"
    return ModelResponse(parts=[ToolCallPart(tool, {"response": value})])


counter: Agent[None, int] = Agent(
    FunctionModel(_counter_model, model_name="counter-fn"), name="counter", output_type=int
)


async def _stubborn_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("maybe")])


stubborn = Agent(
    FunctionModel(_stubborn_model, model_name="stubborn-fn"),
    name="stubborn",
    instructions="Answer yes or no.",
    retries=1,
)


@stubborn.output_validator
def _yes_or_no(output: str) -> str:
    if output not in ("yes", "no"):
        raise ModelRetry("answer yes or no")
    return output


async def _half_broken_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart("slow", {}), ToolCallPart("boom", {})])


half_broken = Agent(FunctionModel(_half_broken_model, model_name="half-fn"), name="half_broken")


@half_broken.tool_plain
async def slow() -> str:
    """Takes a while."""
    await asyncio.sleep(0.2)
    return "slow done"


@half_broken.tool_plain
async def boom() -> str:
    """Fails at once."""
    raise RuntimeError("boom")


SAME_INSTRUCTIONS = "You are a calculator. Use the tools for arithmetic."


async def _add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


async def _multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


async def _add_xy(x: float, y: float) -> float:
    """Add two numbers (now called x and y)."""
    return x + y


async def _add_off_by_one(a: float, b: float) -> float:
    """Add two numbers (with a bug)."""
    return a + b + 1


def _calculator(
    instructions: str = SAME_INSTRUCTIONS, add: Any = _add, add_name: str = "add"
) -> Agent[None, str]:
    """The example calculator's model with these instructions and this `add` tool."""
    agent = Agent(
        FunctionModel(calculator_model, model_name="calculator-fn"),
        name="calculator",
        instructions=instructions,
    )
    agent.tool_plain(name=add_name)(add)
    agent.tool_plain(name="multiply")(_multiply)
    return agent


calculator_reworded = _calculator("You are a careful calculator. Always use the tools.")
calculator_renamed = _calculator(add_name="add_numbers")
calculator_reschemed = _calculator(add=_add_xy)
calculator_off_by_one = _calculator(add=_add_off_by_one)


REPLAY_CATALOG = """
[agents.calculator]
ref = "agentledger.catalog.example_agents:calculator"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
[agents.greeter]
ref = "agentledger.catalog.example_agents:greeter"
[agents.notes]
ref = "agentledger.catalog.example_agents:notes"
[agents.planner]
ref = "support.replay_agents:planner"
[agents.picky]
ref = "support.replay_agents:picky"
[agents.counter]
ref = "support.replay_agents:counter"
[agents.exploding]
ref = "support.agents:exploding"
[agents.effect]
ref = "support.agents:effect"
[agents.stubborn]
ref = "support.replay_agents:stubborn"
[agents.half_broken]
ref = "support.replay_agents:half_broken"
"""


def write_replay_catalog(directory: Path, name: str = "replay-catalog.toml", **refs: str) -> Path:
    """The replay catalog, with `agent=module:attribute` overrides (edited agents)."""
    text = REPLAY_CATALOG
    for agent, ref in refs.items():
        start = text.index(f"[agents.{agent}]")
        line_start = text.index("ref = ", start)
        line_end = text.index("\n", line_start)
        text = text[:line_start] + f'ref = "{ref}"' + text[line_end:]
    path = directory / name
    path.write_text(text)
    return path


def varied_tasks(tag: str) -> list[RunAgent]:
    """Twenty tasks of varied shape: single and parallel tool calls, a tool retry, a
    model retry, failures (tool error, usage limit), a deadline met and a three-turn
    session. (A deadline already past is rejected at intake, so it records no run; the
    golden history holds a run that failed on its deadline.)"""
    later = datetime(2100, 1, 1, tzinfo=UTC)
    session = f"{tag}-session"
    specs: list[dict[str, Any]] = [
        {"agent": "calculator", "prompt": "add 17 and 25"},
        {"agent": "calculator", "prompt": "multiply 6 and 9"},
        {"agent": "calculator", "prompt": "add 1.5 and 2.25"},
        {"agent": "calculator", "prompt": "no numbers here"},
        {"agent": "greeter", "prompt": "hello there"},
        {"agent": "greeter", "prompt": "good morning", "metadata": {"team": "ops"}},
        {"agent": "planner", "prompt": "how warm is it?"},
        {"agent": "planner", "prompt": "again, how warm?"},
        {"agent": "picky", "prompt": "set a high level"},
        {"agent": "picky", "prompt": "set it again"},
        {"agent": "counter", "prompt": "how many?"},
        {"agent": "counter", "prompt": "count them"},
        {"agent": "exploding", "prompt": "boom"},
        {"agent": "calculator", "prompt": "add 2 and 2", "usage_limits": {"request_limit": 1}},
        {"agent": "greeter", "prompt": "in time", "deadline": later},
        {"agent": "effect", "prompt": "apply"},
        {"agent": "notes", "prompt": "remember the deploy is on Friday", "session_id": session},
        {"agent": "notes", "prompt": "remember the DB rotates monthly", "session_id": session},
        {"agent": "notes", "prompt": "what do you remember?", "session_id": session},
        {"agent": "greeter", "prompt": "bye", "session_id": f"{tag}-other"},
    ]
    return [RunAgent(task_id=f"{tag}-{i:02d}", **spec) for i, spec in enumerate(specs)]
