"""Example agents on deterministic `FunctionModel`s: no network, same answer every time.

- `calculator` asks for a tool (`add` / `multiply`) and then states the result, the
  model -> tool -> model shape the benchmarks measure.
- `notes` keeps notes with a tool and answers "what do you remember?" from the
  session's history, so it only works when the history of earlier turns is passed in.
- `greeter` answers at once, without tools.
- `librarian` recalls similar past turns from the memory view (`recall` in the catalog)
  and answers with the closest one it was given.
- `divider` divides with a tool that fails on a zero divisor (the README's debugging
  example: a failing run, `events`, `replay`, `fork`).
- `forecaster` calls a slow `forecast` tool that the catalog puts behind tool middleware
  (cache, rate limit, retry, timeout, log): asked twice for a city, it is served from
  the cache the second time.
"""

from __future__ import annotations

import asyncio
import json
import re

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

__all__ = [
    "calculator",
    "calculator_reply",
    "calculator_v2",
    "divider",
    "greeter",
    "judge",
    "librarian",
    "notes",
    "risk_analyst",
]

_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")


def _last_user_prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def _tool_return(messages: list[ModelMessage]) -> ToolReturnPart | None:
    last = messages[-1]
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                return part
    return None


_MULTIPLY = re.compile(r"\b(multiply|times|product)\b", re.I)


def calculator_reply(
    messages: list[ModelMessage], multiply: re.Pattern[str] = _MULTIPLY
) -> ModelResponse:
    """Calls `add` or `multiply` (when `multiply` matches the prompt) on the two numbers
    in the prompt, then reports."""
    returned = _tool_return(messages)
    if returned is not None:
        return ModelResponse(parts=[TextPart(f"The result is {returned.content}.")])
    prompt = _last_user_prompt(messages)
    numbers = [float(n) for n in _NUMBERS.findall(prompt)][:2]
    if len(numbers) < 2:
        return ModelResponse(parts=[TextPart("Give me two numbers, e.g. 'add 2 and 3'.")])
    tool = "multiply" if multiply.search(prompt) else "add"
    return ModelResponse(parts=[ToolCallPart(tool, {"a": numbers[0], "b": numbers[1]})])


async def calculator_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    # Async on purpose: pydantic-ai runs a sync model function in a worker thread.
    return calculator_reply(messages)


calculator = Agent(
    FunctionModel(calculator_model, model_name="calculator-fn"),
    name="calculator",
    instructions="You are a calculator. Use the tools for arithmetic.",
)


@calculator.tool_plain
async def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@calculator.tool_plain
async def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


async def notes_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stores 'remember ...' prompts with the `save_note` tool; recalls from history."""
    returned = _tool_return(messages)
    if returned is not None:
        return ModelResponse(parts=[TextPart(f"Noted ({returned.content}).")])
    prompt = _last_user_prompt(messages)
    match = re.match(r"\s*remember\s+(.+)", prompt, re.I)
    if match:
        return ModelResponse(parts=[ToolCallPart("save_note", {"note": match.group(1)})])
    remembered = [
        part.args_as_dict()["note"]
        for message in messages
        if isinstance(message, ModelResponse)
        for part in message.parts
        if isinstance(part, ToolCallPart) and part.tool_name == "save_note"
    ]
    if not remembered:
        return ModelResponse(parts=[TextPart("I don't remember anything yet.")])
    return ModelResponse(parts=[TextPart("You told me: " + "; ".join(remembered) + ".")])


notes = Agent(
    FunctionModel(notes_model, model_name="notes-fn"),
    name="notes",
    instructions="You keep the user's notes.",
)


@notes.tool_plain
async def save_note(note: str) -> str:
    """Save a note for later in this conversation."""
    return f"note saved: {note}"


async def greeter_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart(f"Hello! You said: {_last_user_prompt(messages)}")])


greeter = Agent(FunctionModel(greeter_model, model_name="greeter-fn"), name="greeter")


async def divider_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Asks `divide` for 'divide A by B'; says so when the tool asks for another try."""
    last = messages[-1]
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                if part.outcome == "retried":
                    return ModelResponse(parts=[TextPart(f"I can't do that: {part.content}")])
                return ModelResponse(parts=[TextPart(f"The result is {part.content}.")])
    numbers = [float(n) for n in _NUMBERS.findall(_last_user_prompt(messages))][:2]
    if len(numbers) < 2:
        return ModelResponse(parts=[TextPart("Give me two numbers, e.g. 'divide 6 by 3'.")])
    return ModelResponse(parts=[ToolCallPart("divide", {"a": numbers[0], "b": numbers[1]})])


divider = Agent(
    FunctionModel(divider_model, model_name="divider-fn"),
    name="divider",
    instructions="You divide numbers with the divide tool.",
)


@divider.tool_plain
async def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


async def risk_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Scores a prepared transaction summary ("customer ... total 12000.0 over 3
    payments"): large totals and many payments are risky."""
    prompt = _last_user_prompt(messages)
    numbers = [float(n) for n in _NUMBERS.findall(prompt)]
    total = numbers[0] if numbers else 0.0
    count = numbers[1] if len(numbers) > 1 else 0.0
    score = min(1.0, round(total / 20_000 + count / 50, 2))
    reason = "large total" if total >= 10_000 else "usual amounts"
    return ModelResponse(parts=[TextPart(f"risk {score}: {reason}")])


risk_analyst = Agent(FunctionModel(risk_model, model_name="risk-fn"), name="risk_analyst")
"""The example graph's analysis agent: answers `risk <score 0..1>: <reason>`."""


async def librarian_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Answers with the first turn recalled for it (the instructions list them best first)."""
    recalled = [
        line.split("] ", 1)[1]
        for line in (info.instructions or "").splitlines()
        if line.startswith("- [") and "] " in line
    ]
    if not recalled:
        return ModelResponse(parts=[TextPart("I recall nothing like that.")])
    return ModelResponse(parts=[TextPart(f"I recall: {recalled[0]}")])


librarian = Agent(FunctionModel(librarian_model, model_name="librarian-fn"), name="librarian")


async def forecaster_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Asks `forecast` for the city in the prompt, then reports what it said."""
    returned = _tool_return(messages)
    if returned is not None:
        return ModelResponse(parts=[TextPart(f"Forecast: {returned.content}")])
    words = re.findall(r"[A-Z][a-z]+", _last_user_prompt(messages))
    city = words[-1] if words else "Oslo"
    return ModelResponse(parts=[ToolCallPart("forecast", {"city": city})])


forecaster = Agent(
    FunctionModel(forecaster_model, model_name="forecaster-fn"),
    name="forecaster",
    instructions="You give weather forecasts with the forecast tool.",
)


@forecaster.tool_plain
async def forecast(city: str) -> str:
    """Tomorrow's weather for a city (a stand-in for a slow, rate-limited remote API)."""
    await asyncio.sleep(0.05)
    sky = ("sunny", "cloudy", "rainy", "windy")[sum(map(ord, city)) % 4]
    return f"{city}: {sky}, {10 + sum(map(ord, city)) % 15} C"


_MULTIPLY_V2 = re.compile(r"\bmultiply\b", re.I)
"""The calculator's "next version" has a deliberate regression for the evaluation
walkthrough: it only multiplies when the prompt says "multiply" (not "times" or
"product"), so `agentledger eval compare` has something to find."""


async def calculator_v2_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return calculator_reply(messages, _MULTIPLY_V2)


calculator_v2 = Agent(
    FunctionModel(calculator_v2_model, model_name="calculator-v2-fn"),
    name="calculator_v2",
    instructions="You are a calculator. Use the tools for arithmetic.",
    tools=[add, multiply],
)


_TAG = re.compile(r"<(Output|Rubric)>\s*(.*?)\s*</\1>", re.S)


async def judge_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A deterministic LLM judge for the example dataset (pydantic-evals' grading
    prompt in, a `GradingOutput` out): an answer that states a result, greets, or scores
    passes; one that refuses or asks for more fails."""
    fields = dict(_TAG.findall(_last_user_prompt(messages)))
    output = fields.get("Output", "")
    refused = re.search(r"can't|cannot|Give me|don't remember", output, re.I)
    answered = re.search(r"result is|Hello|risk \d|Noted|Forecast|You told me", output)
    score = 0.0 if refused or not output.strip() else (1.0 if answered else 0.5)
    reason = "refuses or asks for more" if refused else ("answers" if answered else "unclear")
    verdict = {"reason": reason, "pass": score >= 0.5, "score": score}
    if info.output_tools:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, verdict)])
    return ModelResponse(parts=[TextPart(json.dumps(verdict))])


judge = Agent(FunctionModel(judge_model, model_name="judge-fn"), name="judge")
"""The example dataset's LLM judge (`Judge: {agent: judge, rubric: ...}`)."""
