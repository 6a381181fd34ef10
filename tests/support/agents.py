"""Agents for tests, on FunctionModels that write what they do to a journal file.

The journal (one line per model call and per tool start/effect) lets a test count real
executions across processes, including a worker killed with SIGKILL. Its path and the
pauses that open a window for the kill come from environment variables, so a worker
subprocess can be steered without code.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelServerError
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
from pydantic_ai.toolsets import FunctionToolset

JOURNAL_ENV = "AGENTLEDGER_TEST_JOURNAL"
TOOL_PAUSE_ENV = "AGENTLEDGER_TEST_TOOL_PAUSE_S"
SECOND_CALL_PAUSE_ENV = "AGENTLEDGER_TEST_SECOND_CALL_PAUSE_S"
MODEL_PAUSE_ENV = "AGENTLEDGER_TEST_MODEL_PAUSE_S"
MODEL_BLOCK_ENV = "AGENTLEDGER_TEST_MODEL_BLOCK_S"
"""Seconds the first model call of a prompt starting with `block` blocks the whole event
loop (a saturated worker)."""


def journal(line: str) -> None:
    path = os.environ.get(JOURNAL_ENV)
    if path:
        with Path(path).open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _prompt(messages: list[ModelMessage]) -> str:
    last = ""
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    last = part.content
    return last


async def effect_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    last = messages[-1]
    returned = (
        [p for p in last.parts if isinstance(p, ToolReturnPart)]
        if isinstance(last, ModelRequest)
        else []
    )
    prompt = _prompt(messages)
    if returned:
        journal(f"model-call-2 {prompt}")
        await asyncio.sleep(float(os.environ.get(SECOND_CALL_PAUSE_ENV, "0")))
        return ModelResponse(parts=[TextPart(f"effect done: {returned[0].content}")])
    journal(f"model-call-1 {prompt}")
    if prompt.startswith("block"):
        time.sleep(float(os.environ.get(MODEL_BLOCK_ENV, "0")))  # noqa: ASYNC251 (on purpose)
    await asyncio.sleep(float(os.environ.get(MODEL_PAUSE_ENV, "0")))
    return ModelResponse(parts=[ToolCallPart("apply_effect", {"label": prompt})])


effect = Agent(FunctionModel(effect_model, model_name="effect-fn"), name="effect")


@effect.tool_plain
async def apply_effect(label: str) -> str:
    """A tool with a side effect we can count (a journal line)."""
    journal(f"tool-start {label}")
    await asyncio.sleep(float(os.environ.get(TOOL_PAUSE_ENV, "0")))
    journal(f"tool-effect {label}")
    return f"applied {label}"


tools_agent = Agent(FunctionModel(effect_model, model_name="effect-fn"), name="tools")


@tools_agent.tool_plain(name="apply_effect")
async def apply_effect_behind_middleware(label: str) -> str:
    """Behind catalog middleware in the tests: journals each real execution with its
    time and process; a label starting `flaky` fails its first execution (ConnectionError), one
    starting `slow` sleeps 2 s on its first execution."""
    path = os.environ.get(JOURNAL_ENV)
    seen = sum(1 for line in read_journal(Path(path)) if line.startswith(f"tool-effect {label} "))
    journal(f"tool-effect {label} {time.time():.6f} {os.getpid()}")
    if label.startswith("flaky") and seen == 0:
        raise ConnectionError(f"{label}: connection reset")
    if label.startswith("slow") and seen == 0:
        await asyncio.sleep(2)
    return f"applied {label}"


def _echo_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    turns = sum(
        1
        for m in messages
        if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)
    )
    return ModelResponse(parts=[TextPart(f"turn {turns}: {_prompt(messages)}")])


echo = Agent(FunctionModel(_echo_model, model_name="echo-fn"), name="echo")


def _exploding_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart("explode", {})])


exploding = Agent(FunctionModel(_exploding_model, model_name="exploding-fn"), name="exploding")


@exploding.tool_plain
def explode() -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


def _unexpected_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A bug in the model function itself: no provider error, a plain exception."""
    raise LookupError("a bug in the model function")


unexpected = Agent(FunctionModel(_unexpected_model, model_name="unexpected-fn"), name="unexpected")


FLAKY_FAILURES_ENV = "AGENTLEDGER_TEST_FLAKY_FAILURES"


def _flaky_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Fails like an overloaded provider (HTTP 5xx) the first N times per prompt."""
    prompt = _prompt(messages)
    failures = int(os.environ.get(FLAKY_FAILURES_ENV, "1"))
    path = os.environ.get(JOURNAL_ENV)
    seen = read_journal(Path(path)).count(f"flaky-fail {prompt}") if path else failures
    if seen < failures:
        journal(f"flaky-fail {prompt}")
        raise ModelServerError(model_name="flaky-fn", message="502 bad gateway")
    return ModelResponse(parts=[TextPart(f"worked after {seen} failures")])


flaky = Agent(FunctionModel(_flaky_model, model_name="flaky-fn"), name="flaky")


CATALOG = """
[agents.effect]
ref = "support.agents:effect"
[agents.echo]
ref = "support.agents:echo"
[agents.exploding]
ref = "support.agents:exploding"
[agents.flaky]
ref = "support.agents:flaky"
[agents.unexpected]
ref = "support.agents:unexpected"
[agents.calculator]
ref = "agentledger.catalog.example_agents:calculator"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
[agents.notes]
ref = "agentledger.catalog.example_agents:notes"
"""


def write_catalog(directory: Path) -> Path:
    path = directory / "test-catalog.toml"
    path.write_text(CATALOG)
    return path


def _calls(tool: str) -> FunctionModel:
    """A model that calls `tool` with the prompt as `label`, then reports its result."""

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        if isinstance(last, ModelRequest):
            for part in last.parts:
                if isinstance(part, ToolReturnPart):
                    return ModelResponse(parts=[TextPart(f"done: {part.content}")])
        return ModelResponse(parts=[ToolCallPart(tool, {"label": _prompt(messages)})])

    return FunctionModel(model, model_name=f"{tool}-fn")


async def _journaled_step(step: str, label: str) -> str:
    journal(f"sub-start {step} {label}")
    if step == "second":
        await asyncio.sleep(float(os.environ.get(TOOL_PAUSE_ENV, "0")))
    journal(f"sub-effect {step} {label}")
    return f"{label}>{step}"


async def first(label: str) -> str:
    return await _journaled_step("first", label)


async def second(label: str) -> str:
    return await _journaled_step("second", label)


async def third(label: str) -> str:
    return await _journaled_step("third", label)


def _composite_tools() -> FunctionToolset[None]:
    from agentledger.handlers.tools import composite

    return FunctionToolset([composite(first, second, third, name="three_steps")])


three_steps = Agent(_calls("three_steps"), name="three_steps", toolsets=[_composite_tools()])
"""A composite tool of three journaled sub-steps; the second pauses (TOOL_PAUSE_ENV)."""


def _side_effecting(on_crash: str) -> Agent[None, str]:
    from agentledger.handlers.tools import side_effect

    @side_effect(on_crash=on_crash)  # type: ignore[arg-type]
    async def pay(label: str) -> str:
        """Pays once: journals its start and, after TOOL_PAUSE_ENV seconds, its effect."""
        journal(f"pay-start {label}")
        await asyncio.sleep(float(os.environ.get(TOOL_PAUSE_ENV, "0")))
        journal(f"pay-effect {label}")
        return f"paid {label}"

    return Agent(_calls("pay"), name=f"pay_{on_crash}", toolsets=[FunctionToolset([pay])])


pay_fail = _side_effecting("fail")
pay_pause = _side_effecting("pause")


moody = Agent(_calls("act"), name="moody")
"""Calls `act`, which fails for a prompt starting with `fail` (the alert tests)."""


@moody.tool_plain
def act(label: str) -> str:
    """Does something that works, unless told to fail."""
    if label.startswith("fail"):
        raise RuntimeError(f"{label}: it broke")
    return f"acted on {label}"
