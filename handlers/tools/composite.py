"""Composite tools: one tool that runs sub-tools in sequence or in parallel and combines
their results, each sub-call recorded and served from the record on recovery.

A sub-call is recorded like a tool call of its own (`ToolCallStarted`, then
`ToolCallFinished` or `ToolCallFailed`), named `<tool>.<sub-tool>` with the id
`<tool call id>#<n>` (n counts the sub-calls of the call, in the order they start).
When the run resumes after a crash, the composite runs again and every sub-call whose
outcome is recorded is served from the record: only the unfinished ones run. Replay
serves the composite's recorded result with its recorded sub-calls.

Two ways to write one:

    @agent.tool_plain
    async def plan_trip(city: str) -> dict:
        weather, hotels = await asyncio.gather(
            sub_call(forecast, city=city), sub_call(find_hotels, city=city)
        )
        return {"weather": weather, "hotels": hotels}

    trip = composite(forecast, find_hotels, mode="parallel", name="plan_trip")
    agent = Agent(model, tools=[trip])
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic_ai.tools import Tool

from agentledger.handlers.recording import (
    NOT_RECORDED,
    current_tool_call,
    record_outcome,
    recorded_outcome,
)

__all__ = ["composite", "sub_call"]


async def sub_call(tool: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run `tool(**kwargs)` (sync or async) as a recorded sub-call of the current tool
    call; outside a recorded run it just runs."""
    scope = current_tool_call()
    if scope is None or scope.recorder is None or scope.ledger is None:
        return await _invoke(tool, kwargs)
    scope.sub_calls[0] += 1  # before any await: parallel sub-calls number in start order
    call_id = f"{scope.tool_call_id}#{scope.sub_calls[0]}"
    name = f"{scope.tool_name}.{getattr(tool, '__name__', 'tool')}"
    ledger, recorder = scope.ledger, scope.recorder
    served = recorded_outcome(ledger.ledger, ledger.failures, call_id)
    if served is not NOT_RECORDED:
        return served
    if call_id not in ledger.started:
        await recorder.start_tool(call_id, name, kwargs)
    return await record_outcome(recorder, call_id, name, lambda: _invoke(tool, kwargs), "sub-tool")


async def _invoke(tool: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    result = tool(**kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


def _single_parameter(tool: Callable[..., Any]) -> str:
    params = list(inspect.signature(tool).parameters)
    if len(params) != 1:
        raise TypeError(
            f"composite(mode='sequence'): {getattr(tool, '__name__', tool)!r} must take one"
            " parameter (the previous step's result)"
        )
    return params[0]


def composite(
    *steps: Callable[..., Any],
    mode: Literal["sequence", "parallel"] = "sequence",
    combine: Callable[[list[Any]], Any] | None = None,
    name: str | None = None,
    description: str | None = None,
) -> Tool[Any]:
    """A pydantic-ai `Tool` that runs `steps` as recorded sub-calls.

    - `parallel`: every step is called at once with the composite's arguments (the first
      step's parameters); the default `combine` gives a dict of results by step name.
    - `sequence`: the first step gets the composite's arguments, each later step the
      previous step's result (its one parameter); the default `combine` gives the last
      result.
    """
    if not steps:
        raise TypeError("composite() needs at least one step")
    first = steps[0]
    names = [getattr(step, "__name__", f"step{i}") for i, step in enumerate(steps)]
    if len(set(names)) != len(names):
        raise TypeError(f"composite(): step names must differ, got {names}")
    if mode == "sequence":
        parameters: Sequence[str] = [_single_parameter(step) for step in steps[1:]]
    elif mode != "parallel":
        raise TypeError(f"composite(): mode must be 'sequence' or 'parallel', got {mode!r}")

    async def run(**kwargs: Any) -> Any:
        results: list[Any]
        if mode == "parallel":
            results = list(await asyncio.gather(*(sub_call(step, **kwargs) for step in steps)))
            if combine is None:
                return dict(zip(names, results, strict=True))
        else:
            results = [await sub_call(first, **kwargs)]
            for step, parameter in zip(steps[1:], parameters, strict=True):
                results.append(await sub_call(step, **{parameter: results[-1]}))
            if combine is None:
                return results[-1]
        return combine(results)

    tool_name = name or ("_then_" if mode == "sequence" else "_and_").join(names)
    run.__name__ = tool_name
    run.__doc__ = description or (
        f"Runs {', '.join(names)} {'one after the other' if mode == 'sequence' else 'at once'}."
    )
    signature = inspect.signature(first)
    hints = typing.get_type_hints(first)
    run.__signature__ = signature.replace(return_annotation=Any)  # type: ignore[attr-defined]
    run.__annotations__ = {p: hints[p] for p in signature.parameters if p in hints} | {
        "return": Any
    }
    return Tool(run, takes_ctx=False, name=tool_name)
