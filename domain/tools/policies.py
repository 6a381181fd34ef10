"""Tool middleware policies, as the catalog declares them and the Python API takes them.

An agent's `[agents.<name>.middleware]` table holds the policies for all its tools;
`[agents.<name>.middleware.tools.<tool>]` tables override them for one tool. A policy
left out is off. Around each call they apply in one fixed order, outermost first:

    log -> cache -> circuit_breaker -> retry -> rate_limit -> timeout -> the tool

so a cache hit costs no rate-limit token and never opens the circuit, each retried
attempt takes its own token (it reaches the downstream service again) and has its own
timeout, and a call that failed after all its retries counts once towards the circuit.

Every decision a policy takes is recorded on the run (`ToolDecision`), saved with the
call's outcome: a replay serves it as recorded, whatever the cache or the limiter hold
by then.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentledger.domain.errors import regexes

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "CacheSpec",
    "CircuitBreakerSpec",
    "LogSpec",
    "MiddlewareSpec",
    "RateLimitSpec",
    "RetrySpec",
    "SideEffectPolicy",
    "ToolDecision",
    "ToolPolicy",
    "admit",
    "args_digest",
    "kv_token",
]


class ToolDecision(StrEnum):
    """What a middleware decided about one call (`AgentRun.ToolDecisionMade.decision`)."""

    CACHE_HIT = "cache_hit"
    """Served from the cache: the tool did not run."""
    RATE_LIMITED = "rate_limited"
    """Held until the rate limit allowed it (`waited_ms`), or refused."""
    RETRIED = "retried"
    """An attempt raised a declared exception; the call was tried again after a back-off."""
    TIMED_OUT = "timed_out"
    """An attempt ran past its timeout and was cancelled."""
    CIRCUIT_OPEN = "circuit_open"
    """Refused without running: the tool's circuit is open after repeated failures."""
    UNKNOWN_AFTER_CRASH = "unknown_after_crash"
    """A side-effecting call was running when its worker stopped: whether its effect
    happened is unknown. The tool's `side_effect` policy says what happens next."""


SideEffectPolicy = Literal["retry", "fail", "pause"]
"""What a side-effecting call found unfinished after a crash does: run again (`retry`,
with the same idempotency key), fail the call and so the run (`fail`: it never runs
twice), or pause the run until a person resolves it (`pause`)."""


_DAY_S = 86_400.0
MAX_CACHE_TTL_S = 7 * _DAY_S
"""The longest a cached result is kept (the cache bucket's own age limit)."""

DEFAULT_REDACT_KEYS = ("pass", "secret", "token", "key", "auth", "cookie", "credential")
"""Argument names containing one of these (any case) are logged as `[redacted]`."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CacheSpec(_Spec):
    """`cache = { ttl_s = 300 }`: results kept for `ttl_s` seconds, keyed on the tool's
    name and its canonical arguments, shared by every worker (a NATS KV bucket). Only
    results are cached: a call that failed or asked the model to retry runs again."""

    ttl_s: float = Field(gt=0, le=MAX_CACHE_TTL_S)


RateKey = Literal["tool", "agent", "session", "task"] | str
"""Who shares one limit: every call of the tool (`tool`), per `agent`, per `session`,
per `task`, or per a task metadata value (`metadata.<name>`, e.g. `metadata.user`)."""

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class RateLimitSpec(_Spec):
    """`rate_limit = "5/s"` or `{ calls = 5, per_s = 1, key = "session", on_limit =
    "wait" }`: at most `calls` starts in any window of `per_s` seconds, shared by every
    worker process (a NATS KV bucket)."""

    calls: int = Field(ge=1, le=10_000)
    per_s: float = Field(gt=0, le=_DAY_S)
    key: RateKey = "tool"
    on_limit: Literal["wait", "reject"] = "wait"
    """`wait` holds the call until a start is free (at most `max_wait_s`); `reject`
    refuses it at once."""
    max_wait_s: float = Field(default=30.0, ge=0, le=3600)
    """A call that would wait longer is refused."""
    ask_model: bool = True
    """A refused call asks the model to do without it (`ModelRetry`); `false` fails the
    call, and so the run (`tool_error`)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"rate {value!r}: write it as <calls>/<unit>, e.g. 5/s, 100/m, 2/10s")
        calls, amount, unit = match.groups()
        return {"calls": int(calls), "per_s": float(amount or 1) * _UNIT_S[unit]}

    @field_validator("key")
    @classmethod
    def _known_key(cls, value: str) -> str:
        if value in ("tool", "agent", "session", "task"):
            return value
        if value.startswith("metadata.") and len(value) > len("metadata."):
            return value
        raise ValueError(f"key {value!r}: one of tool, agent, session, task or metadata.<name>")

    def describe(self) -> str:
        return f"{self.calls}/{self.per_s:g}s"


class RetrySpec(_Spec):
    """`retry = { attempts = 3, on = ["ConnectionError"], backoff_s = 0.2 }`: a call that
    raises one of the `on` exceptions is tried again, up to `attempts` tries in all, with
    an exponential back-off (`backoff_s`, doubled each time, at most `max_backoff_s`)."""

    attempts: int = Field(default=3, ge=2, le=20)
    on: tuple[str, ...] = ("TimeoutError", "ConnectionError")
    """Exception classes: a builtin's name or `module:Class` (subclasses count too)."""
    backoff_s: float = Field(default=0.2, ge=0, le=60)
    max_backoff_s: float = Field(default=5.0, ge=0, le=600)
    jitter: bool = True
    """Spread each back-off over 50-100 % of its length (retries of many calls spread)."""

    @field_validator("on", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str | type):
            value = [value]
        names = []
        for item in value:
            if isinstance(item, type) and issubclass(item, BaseException):
                module = item.__module__
                names.append(
                    item.__name__ if module == "builtins" else f"{module}:{item.__qualname__}"
                )
            elif isinstance(item, str) and item.strip():
                names.append(item.strip())
            else:
                raise ValueError(f"retry on: {item!r} is no exception class or name")
        if not names:
            raise ValueError("retry on: name at least one exception class")
        return tuple(names)

    def backoff(self, attempt: int) -> float:
        """The back-off after failed attempt `attempt` (1-based), before any jitter."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


class CircuitBreakerSpec(_Spec):
    """`circuit_breaker = { failures = 5, reset_s = 30 }`: after `failures` failed calls in
    a row the tool is refused for `reset_s` seconds; then one trial call decides whether
    it closes again. Kept per worker process and per tool name."""

    failures: int = Field(default=5, ge=1, le=1000)
    reset_s: float = Field(default=30.0, gt=0, le=_DAY_S)
    ask_model: bool = True
    """A refused call asks the model to do without it (`ModelRetry`); `false` fails the
    call, and so the run (`tool_error`)."""


class LogSpec(_Spec):
    """`log = true` or `{ redact = ["ssn"], patterns = ["\\d{16}"] }`: every call logged
    (structlog, with run, task and tool context) as it starts and ends, its arguments
    redacted."""

    redact: tuple[str, ...] = DEFAULT_REDACT_KEYS
    """Argument names containing one of these (any case, at any depth) are logged as
    `[redacted]`."""
    patterns: tuple[str, ...] = ()
    """Regular expressions: matches inside logged text become `[redacted]`."""
    result: bool = False
    """Log the result as well (redacted the same way)."""

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return regexes(value)


_POLICIES = (
    "log",
    "cache",
    "circuit_breaker",
    "retry",
    "rate_limit",
    "timeout_s",
    "side_effect",
)
_SWITCHES = ("log", "circuit_breaker", "retry")
"""Policies that `true` turns on with their defaults."""


class ToolPolicy(_Spec):
    """The policies around one tool's calls (each None: off)."""

    log: LogSpec | None = None
    cache: CacheSpec | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    retry: RetrySpec | None = None
    rate_limit: RateLimitSpec | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=_DAY_S)
    side_effect: SideEffectPolicy | None = None
    """The tool has effects outside the run (`agentledger.handlers.tools.side_effect`):
    its start is saved before it runs, and a call found unfinished after a crash follows
    this policy."""
    off: tuple[str, ...] = ()
    """Policies given as `false`: off here even when set for all the agent's tools."""

    @model_validator(mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        off = list(value.get("off", ()))
        for name in _POLICIES:
            if value.get(name) is False:
                del value[name]
                off.append(name)
            elif value.get(name) is True and name == "side_effect":
                value[name] = "fail"  # the safe default: never run twice
            elif value.get(name) is True:
                if name not in _SWITCHES:
                    raise ValueError(f"{name} = true: give its settings (a table)")
                value[name] = {}
        value["off"] = tuple(sorted(set(off)))
        return value

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in _POLICIES)


class MiddlewareSpec(ToolPolicy):
    """An agent's `[agents.<name>.middleware]`: policies for all its tools, and per tool
    overrides (`tools.<tool>`: each policy given there replaces the agent-wide one;
    `false` turns one off for that tool)."""

    tools: dict[str, ToolPolicy] = Field(default_factory=dict)

    def side_effect_of(self, tool: str) -> SideEffectPolicy | None:
        """The side-effect policy declared for `tool` (None: none)."""
        return self.for_tool(tool).side_effect

    def for_tool(self, tool: str) -> ToolPolicy:
        """The policies that apply to `tool`."""
        base = {name: getattr(self, name) for name in _POLICIES}
        own = self.tools.get(tool)
        if own is not None:
            for name in own.model_fields_set & set(_POLICIES):
                base[name] = getattr(own, name)
            for name in own.off:
                base[name] = None
        return ToolPolicy(**base)


def args_digest(tool: str, args: Any) -> str:
    """A digest of a call's tool name and canonical arguments (key order does not count)."""
    text = json.dumps([tool, args], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


_KV_UNSAFE = re.compile(r"[^-_A-Za-z0-9]")


def kv_token(text: str) -> str:
    """`text` as one token of a NATS KV key: unsafe characters replaced, bounded, and a
    short digest so two names never share a token."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_KV_UNSAFE.sub('_', text)[:48]}-{digest}"


def admit(
    starts: list[float], now: float, calls: int, per_s: float
) -> tuple[list[float] | None, float]:
    """The rate limit's sliding log: `starts` are the recorded start times still inside
    the window. Returns the new log with `now` added and 0 when a start is free, else
    None and how long until the oldest start leaves the window. At most `calls` starts
    ever fall in one window of `per_s` seconds (as the clocks that stamped them say)."""
    recent = sorted(t for t in starts if now - per_s < t <= now + per_s)
    inside = [t for t in recent if t > now - per_s]
    if len(inside) < calls:
        return [*inside, now], 0.0
    return None, max(inside[len(inside) - calls] + per_s - now, 0.001)
