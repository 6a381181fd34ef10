"""`ToolMiddleware`: a pydantic-ai `WrapperToolset` that puts the policies of a
`MiddlewareSpec` around each call of the tools it wraps.

Two ways in, with the same policies and the same records:

- the catalog: `[agents.<name>.middleware]` (and `.tools.<tool>` overrides); the worker
  wraps the agent's toolsets at each run;
- Python: `with_middleware(toolset, timeout_s=2, cache={"ttl_s": 60}, ...)` in the
  agent's own module (`Agent(toolsets=[...])`).

The policies run in the fixed order `log -> cache -> circuit_breaker -> retry ->
rate_limit -> timeout -> tool` (`agentledger.domain.tools.policies`). Every decision is
recorded on the run through `record_tool_decision` and saved with the call's outcome;
outside a recorded run (a plain `agent.run`) the policies apply and nothing is recorded.

Shared state (the cache, the rate limits) is the worker's `NatsToolState`, set with
`use_tool_state` when the worker starts; an agent run outside a worker uses a
`MemoryToolState` of its own process (and says so once in the log).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic_ai import ModelRetry, RunContext
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentledger.domain.tools.policies import (
    CacheSpec,
    CircuitBreakerSpec,
    LogSpec,
    MiddlewareSpec,
    RateLimitSpec,
    RetrySpec,
    ToolDecision,
    ToolPolicy,
    args_digest,
    kv_token,
)
from agentledger.handlers.orchestration.context import current_task_context
from agentledger.handlers.recording import ToolCallError, current_tool_call, record_tool_decision
from agentledger.infra.tools.state import MemoryToolState, ToolState

__all__ = [
    "ToolMiddleware",
    "ToolRefused",
    "ToolTimedOut",
    "reset_circuit_breakers",
    "shared_tool_state",
    "tool_state",
    "use_tool_state",
    "with_middleware",
]

log = structlog.get_logger("agentledger.tools")

Call = Callable[[], Awaitable[Any]]


class ToolTimedOut(TimeoutError):
    """A tool call ran past its `timeout_s` (a `retry` on `TimeoutError` retries it)."""


class ToolRefused(ToolCallError):
    """The middleware refused the call (rate limit, open circuit) and `ask_model` is off:
    the call fails, and the run with `tool_error`."""


_STATE: ToolState | None = None
_FALLBACK: MemoryToolState | None = None


def use_tool_state(state: ToolState | None) -> None:
    """Set the shared state every `ToolMiddleware` of this process uses (the worker sets
    its NATS KV state when it starts; None: back to the in-process fallback)."""
    global _STATE
    _STATE = state


def shared_tool_state() -> ToolState | None:
    """The state set with `use_tool_state` (None: none set)."""
    return _STATE


def tool_state() -> ToolState:
    """The shared state in use: the worker's, else this process's own."""
    global _FALLBACK
    if _STATE is not None:
        return _STATE
    if _FALLBACK is None:
        _FALLBACK = MemoryToolState()
        log.warning(
            "tool middleware: no worker state set; the cache and rate limits are this process's own"
        )
    return _FALLBACK


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False
    """A trial call is in flight (half-open)."""


_BREAKERS: dict[str, _Breaker] = {}


def reset_circuit_breakers() -> None:
    """Close every circuit of this process (tests; an operator's restart does the same)."""
    _BREAKERS.clear()


@dataclass(frozen=True)
class _CallInfo:
    name: str
    args: dict[str, Any]


@dataclass
class ToolMiddleware(WrapperToolset[Any]):
    """The policies of `spec` around each call of the wrapped toolset's tools."""

    spec: MiddlewareSpec = field(default_factory=MiddlewareSpec)
    state: ToolState | None = None
    """Shared state for the cache and the rate limits (None: `tool_state()`)."""
    _policies: dict[str, ToolPolicy] = field(default_factory=dict, init=False, repr=False)

    def _policy(self, name: str) -> ToolPolicy:
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = self.spec.for_tool(name)
        return policy

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        policy = self._policy(name)

        def run() -> Awaitable[Any]:
            return self.wrapped.call_tool(name, tool_args, ctx, tool)

        if policy.is_empty():
            return await run()
        call = _CallInfo(name, tool_args)
        chain: Call = run
        if policy.timeout_s is not None:
            chain = _bind(_timeout, call, policy.timeout_s, chain)
        if policy.rate_limit is not None:
            chain = _bind(_rate_limit, call, (policy.rate_limit, self.state), chain)
        if policy.retry is not None:
            chain = _bind(_retry, call, policy.retry, chain)
        if policy.circuit_breaker is not None:
            chain = _bind(_circuit, call, policy.circuit_breaker, chain)
        if policy.cache is not None:
            chain = _bind(_cache, call, (policy.cache, self.state), chain)
        if policy.log is not None:
            chain = _bind(_log_call, call, policy.log, chain)
        return await chain()


def _bind(
    step: Callable[[_CallInfo, Any, Call], Awaitable[Any]], call: _CallInfo, conf: Any, inner: Call
) -> Call:
    def bound() -> Awaitable[Any]:
        return step(call, conf, inner)

    return bound


def with_middleware(
    toolset: AbstractToolset[Any],
    spec: MiddlewareSpec | None = None,
    *,
    state: ToolState | None = None,
    **policies: Any,
) -> ToolMiddleware:
    """`toolset` behind the given policies: a `MiddlewareSpec`, or its fields as keywords
    (`timeout_s=2, cache={"ttl_s": 60}, retry={"on": [httpx.HTTPError]}, tools={...}`),
    validated as the catalog's are."""
    if spec is None:
        spec = MiddlewareSpec.model_validate(policies)
    elif policies:
        raise TypeError("with_middleware: give a spec or keyword policies, not both")
    return ToolMiddleware(toolset, spec=spec, state=state)


# --- the policies, innermost first ----------------------------------------------------


async def _timeout(call: _CallInfo, seconds: float, inner: Call) -> Any:
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            return await inner()
    except TimeoutError:
        waited = (time.monotonic() - started) * 1000
        await record_tool_decision(ToolDecision.TIMED_OUT, {"timeout_s": seconds}, waited)
        raise ToolTimedOut(f"tool {call.name!r} timed out after {seconds:g} s") from None


def _refuse(message: str, ask_model: bool) -> Exception:
    return ModelRetry(message) if ask_model else ToolRefused(message)


def _rate_key(call: _CallInfo, spec: RateLimitSpec) -> str:
    context = current_task_context()
    task = None if context is None else context.task
    if spec.key == "tool":
        scope = ""
    elif task is None:
        scope = "-"
    elif spec.key == "agent":
        scope = task.agent
    elif spec.key == "session":
        scope = task.session_id or "-"
    elif spec.key == "task":
        scope = task.task_id
    else:
        scope = task.metadata.get(spec.key.removeprefix("metadata."), "-")
    return f"{kv_token(call.name)}.{args_digest(spec.key, scope)}"


async def _rate_limit(
    call: _CallInfo, conf: tuple[RateLimitSpec, ToolState | None], inner: Call
) -> Any:
    spec, state = conf
    store = state or tool_state()
    key = _rate_key(call, spec)
    started = time.monotonic()
    waited = False
    while True:
        wait = await store.take(key, spec.calls, spec.per_s)
        if wait == 0:
            break
        spent = time.monotonic() - started
        if spec.on_limit == "reject" or spent + wait > spec.max_wait_s:
            detail = {"limit": spec.describe(), "key": spec.key, "action": "refused"}
            await record_tool_decision(ToolDecision.RATE_LIMITED, detail, spent * 1000)
            raise _refuse(
                f"tool {call.name!r} is rate limited ({spec.describe()}); try again later"
                " or do without it",
                spec.ask_model,
            )
        waited = True
        await asyncio.sleep(wait)
    if waited:
        detail = {"limit": spec.describe(), "key": spec.key, "action": "waited"}
        await record_tool_decision(
            ToolDecision.RATE_LIMITED, detail, (time.monotonic() - started) * 1000
        )
    return await inner()


_EXCEPTIONS: dict[str, type[BaseException]] = {}


def exception_class(name: str) -> type[BaseException]:
    found = _EXCEPTIONS.get(name)
    if found is not None:
        return found
    module_name, _, attr = name.rpartition(":") if ":" in name else ("builtins", "", name)
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError):
        raise ToolCallError(f"retry on {name!r}: no such exception class") from None
    if not (isinstance(value, type) and issubclass(value, BaseException)):
        raise ToolCallError(f"retry on {name!r}: not an exception class")
    _EXCEPTIONS[name] = value
    return value


async def _retry(call: _CallInfo, spec: RetrySpec, inner: Call) -> Any:
    retryable = tuple(exception_class(name) for name in spec.on)
    attempt = 1
    while True:
        try:
            return await inner()
        except ModelRetry:
            raise
        except retryable as e:
            if attempt >= spec.attempts:
                raise
            pause = spec.backoff(attempt)
            if spec.jitter:
                pause *= random.uniform(0.5, 1.0)
            detail = {"attempt": attempt, "error": f"{type(e).__name__}: {e}"[:500]}
            await record_tool_decision(ToolDecision.RETRIED, detail, pause * 1000)
            await asyncio.sleep(pause)
            attempt += 1


async def _circuit(call: _CallInfo, spec: CircuitBreakerSpec, inner: Call) -> Any:
    breaker = _BREAKERS.setdefault(call.name, _Breaker())
    now = time.monotonic()
    if breaker.opened_at is not None:
        remaining = breaker.opened_at + spec.reset_s - now
        if remaining > 0 or breaker.trial:
            detail = {"failures": breaker.failures, "retry_in_s": round(max(remaining, 0), 3)}
            await record_tool_decision(ToolDecision.CIRCUIT_OPEN, detail)
            raise _refuse(
                f"tool {call.name!r} is unavailable (failed {breaker.failures} times in a"
                " row); do without it",
                spec.ask_model,
            )
        breaker.trial = True  # half-open: this call decides
    try:
        result = await inner()
    except ModelRetry:
        breaker.trial = False
        raise
    except Exception:
        breaker.trial = False
        breaker.failures += 1
        if breaker.failures >= spec.failures:
            breaker.opened_at = time.monotonic()
        raise
    breaker.trial = False
    breaker.failures = 0
    breaker.opened_at = None
    return result


async def _cache(call: _CallInfo, conf: tuple[CacheSpec, ToolState | None], inner: Call) -> Any:
    spec, state = conf
    store = state or tool_state()
    context = current_task_context()
    agent = "-" if context is None else context.task.agent
    key = f"{kv_token(agent)}.{kv_token(call.name)}.{args_digest(call.name, call.args)}"
    try:
        hit, value = await store.cache_get(key)
    except Exception as e:  # the cache is an optimisation: a failing cache runs the tool
        log.warning("tool cache unavailable; running the tool", tool=call.name, error=str(e))
        return await inner()
    if hit:
        await record_tool_decision(ToolDecision.CACHE_HIT, {"ttl_s": spec.ttl_s})
        return value
    result = await inner()
    try:
        await store.cache_put(key, to_jsonable_python(result), spec.ttl_s)
    except PydanticSerializationError:
        log.warning("tool result is not JSON; not cached", tool=call.name)
    except Exception as e:
        log.warning("tool result not cached", tool=call.name, error=str(e))
    return result


_REDACTED = "[redacted]"


def _redact(value: Any, spec: LogSpec, patterns: list[re.Pattern[str]]) -> Any:
    if isinstance(value, dict):
        return {
            k: _REDACTED
            if any(word in str(k).lower() for word in spec.redact)
            else _redact(v, spec, patterns)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, spec, patterns) for v in value]
    if isinstance(value, str):
        for pattern in patterns:
            value = pattern.sub(_REDACTED, value)
    return value


_PATTERNS: dict[tuple[str, ...], list[re.Pattern[str]]] = {}


async def _log_call(call: _CallInfo, spec: LogSpec, inner: Call) -> Any:
    patterns = _PATTERNS.get(spec.patterns)
    if patterns is None:
        patterns = _PATTERNS[spec.patterns] = [re.compile(p) for p in spec.patterns]
    scope = current_tool_call()
    context = current_task_context()
    bound = log.bind(
        tool=call.name,
        tool_call_id=None if scope is None else scope.tool_call_id,
        run_id=None if scope is None else scope.run_id,
        task_id=None if context is None else context.task.task_id,
        agent=None if context is None else context.task.agent,
    )
    bound.info("tool call started", args=_redact(to_jsonable_python(call.args), spec, patterns))
    started = time.perf_counter()
    try:
        result = await inner()
    except ModelRetry as e:
        elapsed = (time.perf_counter() - started) * 1000
        bound.info(
            "tool call asked the model to retry", duration_ms=round(elapsed, 2), reason=str(e)
        )
        raise
    except Exception as e:
        elapsed = (time.perf_counter() - started) * 1000
        bound.warning(
            "tool call failed",
            duration_ms=round(elapsed, 2),
            error=_redact(f"{type(e).__name__}: {e}", spec, patterns),
        )
        raise
    elapsed = (time.perf_counter() - started) * 1000
    if spec.result:
        shown = _redact(to_jsonable_python(result, fallback=repr), spec, patterns)
        bound.info("tool call finished", duration_ms=round(elapsed, 2), result=shown)
    else:
        bound.info("tool call finished", duration_ms=round(elapsed, 2))
    return result
