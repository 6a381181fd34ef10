"""Turning pydantic-ai's stream events into chunks, node by node of `agent.iter`.

A model request node is streamed with its own `node.stream(ctx)` (the request is made
once, streamed; no second run) when the model can stream; a tool-calls node streams its
tool call and result events. A model that cannot stream (a `FunctionModel` without a
`stream_function`) is asked as usual and its text goes out as one chunk per text part.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import FunctionModel
from pydantic_core import to_json, to_jsonable_python

from agentledger.handlers.streaming.publisher import StreamPublisher

__all__ = ["can_stream", "stream_node", "text_of"]


def can_stream(model: Model | str | None) -> bool:
    """Whether the model streams its responses (a FunctionModel needs a stream function)."""
    if isinstance(model, FunctionModel):
        return model.stream_function is not None
    return isinstance(model, Model | str)  # a provider's model streams


def text_of(response: ModelResponse) -> list[dict[str, Any]]:
    """A response's text parts as chunks (a model that could not stream)."""
    return [
        {"kind": "text", "text": part.content}
        for part in response.parts
        if isinstance(part, TextPart) and part.content
    ]


async def stream_node(node: Any, ctx: Any, publisher: StreamPublisher, streams: bool) -> bool:
    """Run `node` streamed, sending its events; returns whether it ran (False: the node is
    left for `agent.iter` to run as usual)."""
    if Agent.is_model_request_node(node):
        if not streams:
            return False
        stream: Any = node.stream(ctx)
        async with stream as model_events:
            async for event in model_events:
                chunk = _model_event(event)
                if chunk is not None:
                    await publisher.emit(chunk)
        return True
    if Agent.is_call_tools_node(node):
        if not streams:
            for chunk in text_of(node.model_response):
                await publisher.emit(chunk)
        async with node.stream(ctx) as events:
            async for event in events:
                chunk = _tool_event(event)
                if chunk is not None:
                    await publisher.emit(chunk)
        return True
    return False


def _model_event(event: Any) -> dict[str, Any] | None:
    if isinstance(event, PartStartEvent):
        part = event.part
        if isinstance(part, TextPart) and part.content:
            return {"kind": "text", "text": part.content}
        if isinstance(part, ToolCallPart):
            args = part.args if isinstance(part.args, str) else to_jsonable_python(part.args)
            if not isinstance(args, str):
                args = to_json(args).decode()
            return {
                "kind": "args",
                "data": {"index": event.index, "tool_name": part.tool_name, "delta": args or ""},
            }
    elif isinstance(event, PartDeltaEvent):
        delta = event.delta
        if isinstance(delta, TextPartDelta) and delta.content_delta:
            return {"kind": "text", "text": delta.content_delta}
        if isinstance(delta, ToolCallPartDelta) and isinstance(delta.args_delta, str):
            return {
                "kind": "args",
                "data": {
                    "index": event.index,
                    "tool_name": delta.tool_name_delta,
                    "delta": delta.args_delta,
                },
            }
    return None


def _tool_event(event: Any) -> dict[str, Any] | None:
    if isinstance(event, FunctionToolCallEvent):
        part = event.part
        return {
            "kind": "tool_call",
            "data": {
                "tool_name": part.tool_name,
                "tool_call_id": part.tool_call_id,
                "args": to_jsonable_python(part.args, fallback=str),
            },
        }
    if isinstance(event, FunctionToolResultEvent):
        returned = event.part
        return {
            "kind": "tool_result",
            "data": {
                "tool_name": returned.tool_name,
                "tool_call_id": returned.tool_call_id,
                "content": to_jsonable_python(returned.content, fallback=str),
                "outcome": getattr(returned, "outcome", "success"),
            },
        }
    return None
