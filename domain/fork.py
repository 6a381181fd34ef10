"""Where a run may be forked, and what the fork starts from (pure rules).

A fork at event index N (1-based, as `agentledger events` numbers them) starts a new
run whose events 2..N are copies of the parent's and which then continues live:

- with no prompt, from the parent's state at N (the model is asked again, or the tool
  calls still pending at N run): N must lie before the parent's final response;
- with a prompt at N = 1, as the parent's task with that prompt instead;
- with a prompt at N > 1, as a follow-up: N must be a point where the model has
  answered without pending tool calls, and the prompt is sent after the copied history.

N may not split a tool call (its start copied, its result not), nor include the
parent's ending (`RunCompleted` / `RunFailed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.domain.errors import DomainError
from agentledger.domain.run import AgentRun

__all__ = ["ForkError", "ForkPlan", "plan_fork"]


class ForkError(DomainError):
    """The fork point (or prompt) does not fit the parent run."""


@dataclass(frozen=True, kw_only=True)
class ForkPlan:
    """What the fork's first events hold."""

    at: int
    """The parent's event index the fork starts after."""
    copied: tuple[Any, ...]
    """The parent's events 2..at, to copy onto the fork."""
    prompt: str
    """The fork's task prompt (the parent's, or the new one at N = 1)."""
    fork_prompt: str | None
    """A follow-up prompt sent after the copied history (N > 1), or None."""


def _is_answer(event: object) -> bool:
    """A model response without tool calls: the model has answered."""
    if not isinstance(event, AgentRun.ModelResponseReceived):
        return False
    parts = event.message.get("parts", []) if isinstance(event.message, dict) else []
    return not any(p.get("part_kind") == "tool-call" for p in parts)


def _valid_prompt_points(events: Sequence[Any]) -> list[int]:
    points = [1]
    points += [e.originator_version for e in events if _is_answer(e)]
    return points


def plan_fork(parent: Sequence[Any], at: int, prompt: str | None) -> ForkPlan:
    """The plan of a fork of `parent` (its events, in order) at `at`; `ForkError` says
    why a fork point or prompt does not fit."""
    if not parent or not isinstance(parent[0], AgentRun.RunRequested):
        raise ForkError("only agent runs can be forked")
    ending = next(
        (
            e.originator_version
            for e in parent
            if isinstance(e, AgentRun.RunCompleted | AgentRun.RunFailed)
        ),
        None,
    )
    last = ending - 1 if ending is not None else parent[-1].originator_version
    if not 1 <= at <= last:
        raise ForkError(f"fork point {at} is outside 1..{last} (events before the run's ending)")
    copied = tuple(e for e in parent[1:] if e.originator_version <= at)
    started = {e.tool_call_id for e in copied if isinstance(e, AgentRun.ToolCallStarted)}
    ended = {
        e.tool_call_id
        for e in copied
        if isinstance(e, AgentRun.ToolCallFinished | AgentRun.ToolCallFailed)
    }
    if started - ended:
        raise ForkError(
            f"fork point {at} splits tool call(s) {', '.join(sorted(started - ended))}:"
            " fork before the call starts or after its result"
        )
    requested = parent[0]
    messages = [
        e
        for e in copied
        if isinstance(e, AgentRun.ModelRequestSent | AgentRun.ModelResponseReceived)
    ]
    if prompt is None:
        if messages and _is_answer(messages[-1]):
            raise ForkError(
                f"at event {at} the model has already answered: give a prompt to continue"
                " from there, or fork at an earlier event"
            )
        return ForkPlan(at=at, copied=copied, prompt=requested.prompt, fork_prompt=None)
    if not prompt:
        raise ForkError("the fork's prompt is empty")
    if at == 1:
        return ForkPlan(at=at, copied=copied, prompt=prompt, fork_prompt=None)
    if not messages or not _is_answer(messages[-1]) or copied[-1] is not messages[-1]:
        before_end = [e for e in parent if e.originator_version <= last]
        points = ", ".join(str(p) for p in _valid_prompt_points(before_end))
        raise ForkError(
            f"a prompt needs a fork point where the model has answered without pending tool"
            f" calls; for this run: {points}"
        )
    return ForkPlan(at=at, copied=copied, prompt=requested.prompt, fork_prompt=prompt)
