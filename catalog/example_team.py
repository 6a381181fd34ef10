"""Example agents for the orchestration patterns (`[workflows.*]` in the example catalog),
on deterministic `FunctionModel`s: no network, the same answer every time.

- sequential `write_up`: `drafter` -> `editor`;
- parallel `opinions`: `optimist`, `skeptic`, `realist`, merged by `moderator`;
- supervisor `report`: `manager` delegates to `researcher` then `writer`, then answers;
  `stubborn_manager` never answers (its workflow stops at its round bound);
- pipeline `names_etl`: `extractor` (-> `Extracted`) -> `normaliser` (-> `Normalised`) ->
  `loader` (-> `Loaded`);
- handoff `helpdesk`: `triage` hands billing and technical questions to `billing` and
  `tech_support`, who see the conversation so far, and answers the rest itself;
- shared scratchpad `tally`: four `counter`s at once add one to the workflow's
  scratchpad key `count` (read, then write with the revision read; on a conflict, read
  again), and `tally_reader` reports it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
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

from agentledger.domain.orchestration.decisions import Delegate, FinalAnswer, Handoff
from agentledger.handlers.orchestration.scratchpad import scratchpad_toolset

__all__ = [
    "Extracted",
    "Loaded",
    "Normalised",
    "billing",
    "counter",
    "drafter",
    "editor",
    "extractor",
    "loader",
    "manager",
    "moderator",
    "normaliser",
    "optimist",
    "realist",
    "researcher",
    "skeptic",
    "stubborn_manager",
    "tally_reader",
    "tech_support",
    "triage",
    "writer",
]


def _prompt(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def _user_turns(messages: list[ModelMessage]) -> int:
    return sum(
        1
        for m in messages
        if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)
    )


def _text_agent(name: str, reply: Any) -> Agent[None, str]:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(reply(_prompt(messages), messages))])

    return Agent(FunctionModel(model, model_name=f"{name}-fn"), name=name)


def _output_call(info: AgentInfo, kind: type[BaseModel], value: BaseModel) -> ModelResponse:
    """Answer through the output tool pydantic-ai offers for `kind`."""
    tools = info.output_tools
    tool = next((t for t in tools if t.name.endswith(kind.__name__)), tools[0])
    return ModelResponse(parts=[ToolCallPart(tool.name, value.model_dump(mode="json"))])


# -- sequential ---------------------------------------------------------------------------

drafter = _text_agent("drafter", lambda p, _: f"Draft: {p.strip()}")
editor = _text_agent(
    "editor", lambda p, _: "Edited: " + p.removeprefix("Draft: ").strip().capitalize() + "."
)

# -- parallel -----------------------------------------------------------------------------

optimist = _text_agent("optimist", lambda p, _: f"{p.strip()}: a great opportunity.")
skeptic = _text_agent("skeptic", lambda p, _: f"{p.strip()}: the risks are underestimated.")
realist = _text_agent("realist", lambda p, _: f"{p.strip()}: worth a small pilot first.")


def _moderate(prompt: str, _: list[ModelMessage]) -> str:
    try:
        data = json.loads(prompt)
        results, failed = data["results"], data["failed"]
    except (ValueError, KeyError, TypeError):
        return "I was given no views to summarise."
    views = " | ".join(f"{agent}: {text}" for agent, text in sorted(results.items()))
    missing = f" ({len(failed)} missing)" if failed else ""
    return f"{len(results)} views{missing}. {views}"


moderator = _text_agent("moderator", _moderate)

# -- supervisor ---------------------------------------------------------------------------


async def _manager_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Turn 1: research the topic; turn 2: have it written up; turn 3: answer with it."""
    turns = _user_turns(messages)  # the conversation so far (a session per workflow)
    prompt = _prompt(messages)
    if turns == 1:
        return _output_call(
            info, Delegate, Delegate(worker="researcher", instruction=f"find facts on: {prompt}")
        )
    result = json.loads(prompt).get("result", "") if prompt.startswith("{") else prompt
    if turns == 2:
        return _output_call(
            info, Delegate, Delegate(worker="writer", instruction=f"write up: {result}")
        )
    return _output_call(info, FinalAnswer, FinalAnswer(answer=result))


async def _stubborn_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return _output_call(
        info, Delegate, Delegate(worker="researcher", instruction="look into it once more")
    )


manager: Agent[None, Delegate | FinalAnswer] = Agent(
    FunctionModel(_manager_model, model_name="manager-fn"),
    name="manager",
    output_type=[Delegate, FinalAnswer],
)
stubborn_manager: Agent[None, Delegate | FinalAnswer] = Agent(
    FunctionModel(_stubborn_model, model_name="stubborn-fn"),
    name="stubborn_manager",
    output_type=[Delegate, FinalAnswer],
)
researcher = _text_agent(
    "researcher", lambda p, _: f"3 facts about {p.removeprefix('find facts on: ').strip()}"
)
writer = _text_agent("writer", lambda p, _: f"Report: {p.removeprefix('write up: ').strip()}")

# -- pipeline -----------------------------------------------------------------------------


class Extracted(BaseModel):
    names: list[str]


class Normalised(BaseModel):
    names: list[str]
    """Title case, unique, sorted."""


class Loaded(BaseModel):
    count: int
    names: list[str]


_WORD = re.compile(r"[A-Za-z]+")
_NOT_NAMES = frozenset({"a", "and", "again", "an", "met", "meet", "the", "then", "with"})


async def _extract(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    words = _WORD.findall(_prompt(messages))
    names = [w for w in words if w.lower() not in _NOT_NAMES]
    return _output_call(info, Extracted, Extracted(names=names))


async def _normalise(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    names = Extracted.model_validate_json(_prompt(messages)).names
    return _output_call(info, Normalised, Normalised(names=sorted({n.title() for n in names})))


async def _load(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    names = Normalised.model_validate_json(_prompt(messages)).names
    return _output_call(info, Loaded, Loaded(count=len(names), names=names))


extractor: Agent[None, Extracted] = Agent(
    FunctionModel(_extract, model_name="extract-fn"), name="extractor", output_type=Extracted
)
normaliser: Agent[None, Normalised] = Agent(
    FunctionModel(_normalise, model_name="normalise-fn"), name="normaliser", output_type=Normalised
)
loader: Agent[None, Loaded] = Agent(
    FunctionModel(_load, model_name="load-fn"), name="loader", output_type=Loaded
)

# -- handoff ------------------------------------------------------------------------------


async def _triage(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = _prompt(messages).lower()
    if any(w in prompt for w in ("invoice", "refund", "bill", "charge")):
        return _output_call(info, Handoff, Handoff(to="billing", reason="a billing question"))
    if any(w in prompt for w in ("error", "crash", "bug", "login")):
        return _output_call(info, Handoff, Handoff(to="tech_support", reason="a technical problem"))
    return _output_call(
        info, FinalAnswer, FinalAnswer(answer="Hello! Ask me about billing or a technical problem.")
    )


triage: Agent[None, Handoff | FinalAnswer] = Agent(
    FunctionModel(_triage, model_name="triage-fn"),
    name="triage",
    output_type=[Handoff, FinalAnswer],
)


def _specialist(topic: str) -> Any:
    def reply(prompt: str, messages: list[ModelMessage]) -> str:
        earlier = _user_turns(messages) - 1
        return (
            f"{topic} here: about '{prompt.strip()}', I can see {earlier} earlier"
            f" turn(s) of this conversation."
        )

    return reply


billing = _text_agent("billing", _specialist("Billing"))
tech_support = _text_agent("tech_support", _specialist("Tech support"))


# -- shared scratchpad --------------------------------------------------------------------


def _last_tool_return(messages: list[ModelMessage]) -> ToolReturnPart | None:
    last = messages[-1]
    if isinstance(last, ModelRequest):
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                return part
    return None


async def _count(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Read `count`, write it + 1 at the revision read; on a conflict, read again."""
    returned = _last_tool_return(messages)
    read = ToolCallPart("scratchpad_read", {"key": "count"})
    if returned is None:
        return ModelResponse(parts=[read])
    result = returned.content if isinstance(returned.content, dict) else {}
    if returned.tool_name == "scratchpad_read":
        value = result.get("value") or 0
        write = {"key": "count", "value": value + 1, "expected_revision": result.get("revision")}
        return ModelResponse(parts=[ToolCallPart("scratchpad_write", write)])
    if "conflict" in result:
        return ModelResponse(parts=[read])
    return ModelResponse(parts=[TextPart(f"counted (revision {result.get('revision')})")])


async def _read_tally(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = _last_tool_return(messages)
    if returned is None:
        return ModelResponse(parts=[ToolCallPart("scratchpad_read", {"key": "count"})])
    result = returned.content if isinstance(returned.content, dict) else {}
    return ModelResponse(parts=[TextPart(f"count = {result.get('value')}")])


counter = Agent(
    FunctionModel(_count, model_name="counter-fn"), name="counter", toolsets=[scratchpad_toolset()]
)
tally_reader = Agent(
    FunctionModel(_read_tally, model_name="tally-fn"),
    name="tally_reader",
    toolsets=[scratchpad_toolset()],
)
