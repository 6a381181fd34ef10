"""Side-effecting tools: the `side_effect` decorator and idempotency keys.

A tool with effects outside the run (it sends a mail, charges a card, writes to another
system) is marked so, with `@side_effect(on_crash=...)` under the agent's tool decorator
or with `side_effect = "..."` in the catalog's middleware table:

    @agent.tool_plain
    @side_effect(on_crash="fail")
    async def charge(amount_cents: int) -> str:
        return await payments.charge(amount_cents, idempotency_key=idempotency_key())

Its start is saved before it runs; a call found started but unfinished when the run
resumes after a crash is recorded as `unknown_after_crash`, and `on_crash` decides:
`retry` runs it again (with the same idempotency key, so an API that deduplicates on it
applies the effect once), `fail` fails the call and the run (`tool_error`; it never runs
twice), `pause` pauses the run until a person resolves the call with
`agentledger tool resolve`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from agentledger.domain.tools.policies import SideEffectPolicy
from agentledger.handlers.recording import SIDE_EFFECT_ATTRIBUTE, current_tool_call

__all__ = ["idempotency_key", "side_effect"]

F = TypeVar("F", bound=Callable[..., Any])

_POLICIES = ("retry", "fail", "pause")


def side_effect(on_crash: SideEffectPolicy = "fail") -> Callable[[F], F]:
    """Mark a tool function as side-effecting (see the module docstring)."""
    if on_crash not in _POLICIES:
        raise ValueError(f"side_effect on_crash={on_crash!r}: one of {', '.join(_POLICIES)}")

    def mark(function: F) -> F:
        setattr(function, SIDE_EFFECT_ATTRIBUTE, on_crash)
        return function

    return mark


def idempotency_key(suffix: str = "") -> str:
    """A key for the current tool call, the same every time the call is carried out (a
    retry, a resume after a crash): derived from the run and the tool call id, so an
    external API can deduplicate the effect. `suffix` tells apart several effects of one
    call. Raises `RuntimeError` outside a tool call of a recorded run."""
    scope = current_tool_call()
    if scope is None or scope.run_id is None:
        raise RuntimeError("idempotency_key() is only known inside a tool call of a recorded run")
    text = f"{scope.run_id}/{scope.tool_call_id}/{suffix}"
    return "al-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
