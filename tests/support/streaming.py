"""A model that answers the same whether it is streamed or not (same parts, same usage),
for the streaming tests: pydantic-ai's FunctionModel estimates tokens differently in its
two modes, a real provider reports them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponseStreamEvent,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

PIECES_ENV = "AGENTLEDGER_TEST_STREAM_PIECES"
"""How many words the streaming agent's answer has (default 20)."""
DELAY_ENV = "AGENTLEDGER_TEST_STREAM_DELAY_S"
"""Seconds between two streamed pieces (default 0)."""


def _plan(
    messages: list[ModelMessage], tools: bool = True
) -> tuple[list[str], tuple[str, str, str] | None]:
    """(text pieces, or a tool call (name, JSON args, id)) for the next response: first
    `lookup(topic=<prompt>)`, then an answer of N words quoting the tool's result (without
    `tools`: the N words at once)."""
    last = messages[-1]
    returned = [p for p in getattr(last, "parts", []) if isinstance(p, ToolReturnPart)]
    if not tools:
        count = int(os.environ.get(PIECES_ENV, "20"))
        return [f"w{i} " for i in range(count - 1)] + [f"w{count - 1}."], None
    if not returned:
        prompt = next(
            p.content
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart)
        )
        return [], ("lookup", f'{{"topic": "{prompt}"}}', "call-lookup")
    count = int(os.environ.get(PIECES_ENV, "20"))
    words = [f"{returned[0].content}:"] + [
        f"w{i}." if i % 5 == 4 else f"w{i}" for i in range(count)
    ]
    return [w + " " for w in words[:-1]] + [words[-1]], None


def _usage(pieces: list[str], tool: tuple[str, str, str] | None) -> RequestUsage:
    return RequestUsage(input_tokens=40, output_tokens=len(pieces) + (3 if tool else 0))


@dataclass
class _ScriptStream(StreamedResponse):
    _pieces: list[str] = field(default_factory=list)
    _tool: tuple[str, str, str] | None = None
    _delay: float = 0.0
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        if self._tool is not None:
            name, args, call_id = self._tool
            event = self._parts_manager.handle_tool_call_delta(
                vendor_part_id=0, tool_name=name, args=args, tool_call_id=call_id
            )
            if event is not None:
                yield event
        for piece in self._pieces:
            if self._delay:
                await asyncio.sleep(self._delay)
            for event in self._parts_manager.handle_text_delta(
                vendor_part_id="content", content=piece
            ):
                yield event
        self._usage = _usage(self._pieces, self._tool)

    @property
    def model_name(self) -> str:
        return "scripted"

    @property
    def provider_name(self) -> str | None:
        return None

    @property
    def provider_url(self) -> str | None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


class ScriptedModel(Model):
    """Streams (or answers at once with) the same response."""

    def __init__(self, tools: bool = True) -> None:
        super().__init__()
        self._tools = tools

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        pieces, tool = _plan(messages, self._tools)
        parts: list[Any] = (
            [ToolCallPart(tool[0], tool[1], tool_call_id=tool[2])]
            if tool
            else [TextPart("".join(pieces))]
        )
        return ModelResponse(parts=parts, usage=_usage(pieces, tool), model_name="scripted")

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        pieces, tool = _plan(messages, self._tools)
        yield _ScriptStream(
            model_request_parameters=model_request_parameters,
            _pieces=pieces,
            _tool=tool,
            _delay=float(os.environ.get(DELAY_ENV, "0")),
        )

    @property
    def model_name(self) -> str:
        return "scripted"

    @property
    def system(self) -> str:
        return "test"


streamer = Agent(ScriptedModel(), name="streamer")


@streamer.tool_plain
def lookup(topic: str) -> str:
    """Looks a topic up."""
    return f"notes on {topic}"


talker = Agent(ScriptedModel(tools=False), name="talker")
"""Answers with PIECES_ENV words at once, streamed word by word (the streaming bench)."""


class Exploding:
    """A stream processor with a bug: it raises on the fifth text chunk."""

    def __init__(self, spec: Any) -> None:
        self._seen = 0

    def process(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk["kind"] == "text":
            self._seen += 1
            if self._seen == 5:
                raise ZeroDivisionError("a bug in a stream processor")
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []
