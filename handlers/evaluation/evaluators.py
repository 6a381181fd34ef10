"""The evaluators a dataset can name, on top of pydantic-evals' own.

pydantic-evals' `EqualsExpected` (exact match), `Equals`, `Contains`, `IsInstance`,
`MaxDuration` (latency, from the recorded run's duration) and `LLMJudge` are available
as they are. agentledger adds:

- `JsonEquals`: the output and the expected output are equal as JSON (strings are parsed
  as JSON first, so `'{"a": 1}'` equals `{"a": 1}`; key order never matters);
- `OutputValid`: the output validates against a type: `type: "module:attr"` (a pydantic
  model or any type), or by default the case agent's own `output_type`;
- `ToolCalled`: the run called `tool` (with `args` a subset of some call's arguments,
  and `times` calls exactly when given; `called: false` asserts it was not called);
- `MaxCost`: the run's recorded cost is at most `max_usd`;
- `MaxTokens`: input plus output tokens at most `max_tokens`;
- `Judge`: an LLM judge (pydantic-evals' `LLMJudge`) whose model is a catalog agent's
  (`agent: judge`): the judge runs on the model the catalog configures, with its
  provider settings, never on a hard-coded one.

A dataset can also name its own evaluators, given in the catalog as `module:attribute`
(`[datasets.<name>] evaluators = ["mypkg.evals:Polite"]`): any pydantic-evals
`Evaluator` dataclass.

Recorded facts reach evaluators through the `EvaluatorContext`: `duration` (seconds),
`metrics` (`cost_usd`, `input_tokens`, `output_tokens`, `tool_calls`, `duration_ms`)
and `attributes` (`tool_calls`: a list of `{"tool", "args"}`, `agent`, `run_id`,
`status`, `error`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_evals.evaluators import (
    Contains,
    Equals,
    EqualsExpected,
    EvaluationReason,
    Evaluator,
    EvaluatorContext,
    IsInstance,
    LLMJudge,
    MaxDuration,
)
from pydantic_evals.evaluators.evaluator import EvaluatorOutput

from agentledger.handlers.refs import CatalogError, load_ref

__all__ = [
    "BUILT_IN",
    "JsonEquals",
    "Judge",
    "MaxCost",
    "MaxTokens",
    "OutputValid",
    "ToolCalled",
    "judge_models",
]


@dataclass(repr=False)
class JsonEquals(Evaluator[object, object, object]):
    """The output equals the expected output as JSON (strings parsed first)."""

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        if ctx.expected_output is None:
            return {}
        want, got = _as_json(ctx.expected_output), _as_json(ctx.output)
        if want == got:
            return True
        return EvaluationReason(False, f"expected {_short(want)}, got {_short(got)}")


@dataclass(repr=False)
class OutputValid(Evaluator[object, object, object]):
    """The output validates against `type` (`module:attr`), else the agent's output type."""

    type: str | None = None

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        target: Any
        if self.type is not None:
            try:
                target = load_ref(self.type)
            except CatalogError as e:
                raise ValueError(f"OutputValid type {self.type!r}: {e}") from None
        else:
            target = ctx.attributes.get("output_type", str)
        adapter: TypeAdapter[Any] = TypeAdapter(target)
        value = ctx.output
        try:
            if isinstance(value, str) and target is not str:
                try:
                    adapter.validate_json(value)
                except ValidationError:
                    adapter.validate_python(value)
            else:
                adapter.validate_python(value)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "output"
            return EvaluationReason(False, f"{where}: {first['msg']}")
        return True


@dataclass(repr=False)
class ToolCalled(Evaluator[object, object, object]):
    """The run called `tool` (with `args` among some call's arguments; `times` calls)."""

    tool: str
    args: dict[str, Any] | None = None
    times: int | None = None
    called: bool = True

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        calls = [c for c in ctx.attributes.get("tool_calls", []) if c.get("tool") == self.tool]
        if self.args is not None:
            calls = [c for c in calls if _has(c.get("args"), self.args)]
        if not self.called:
            if calls:
                return EvaluationReason(False, f"{self.tool} was called {len(calls)} time(s)")
            return True
        if self.times is not None and len(calls) != self.times:
            return EvaluationReason(
                False, f"{self.tool} called {len(calls)} time(s), expected {self.times}"
            )
        if not calls:
            seen = sorted({str(c.get("tool")) for c in ctx.attributes.get("tool_calls", [])})
            with_args = f" with {_short(self.args)}" if self.args is not None else ""
            return EvaluationReason(
                False, f"no call of {self.tool}{with_args} (called: {', '.join(seen) or 'none'})"
            )
        return True

    def get_default_evaluation_name(self) -> str:
        return f"ToolCalled:{self.tool}"


@dataclass(repr=False)
class MaxCost(Evaluator[object, object, object]):
    """The run's recorded cost (US dollars) is at most `max_usd`; unpriced: skipped."""

    max_usd: float

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        cost = ctx.metrics.get("cost_usd")
        if cost is None:
            return {}
        if cost <= self.max_usd:
            return True
        return EvaluationReason(False, f"cost ${cost:.6f} > ${self.max_usd:.6f}")


@dataclass(repr=False)
class MaxTokens(Evaluator[object, object, object]):
    """Input plus output tokens at most `max_tokens`."""

    max_tokens: int

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        used = int(ctx.metrics.get("input_tokens", 0) + ctx.metrics.get("output_tokens", 0))
        if used <= self.max_tokens:
            return True
        return EvaluationReason(False, f"{used} tokens > {self.max_tokens}")


_JUDGES: ContextVar[dict[str, Any] | None] = ContextVar("agentledger_judges", default=None)


@contextmanager
def judge_models(models: dict[str, Any]) -> Iterator[None]:
    """Within: `Judge(agent=name)` judges with `models[name]` (the catalog's models)."""
    token = _JUDGES.set(models)
    try:
        yield
    finally:
        _JUDGES.reset(token)


@dataclass(repr=False)
class Judge(LLMJudge):
    """An `LLMJudge` on the model of the catalog agent `agent`."""

    agent: str = ""
    model: Any = field(default=None)

    async def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> EvaluatorOutput:
        models = _JUDGES.get() or {}
        if self.agent not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ValueError(f"Judge: no catalog agent {self.agent!r} to judge with ({known})")
        resolved = dataclasses.replace(self, model=models[self.agent])
        return await LLMJudge.evaluate(resolved, ctx)

    def get_default_evaluation_name(self) -> str:
        return "Judge"


BUILT_IN: tuple[type[Evaluator[Any, Any, Any]], ...] = (
    JsonEquals,
    OutputValid,
    ToolCalled,
    MaxCost,
    MaxTokens,
    Judge,
)
"""agentledger's evaluators (pydantic-evals registers its own defaults itself)."""

_DEFAULTS = (Equals, EqualsExpected, Contains, IsInstance, MaxDuration, LLMJudge)


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return json.loads(json.dumps(value, default=str))


def _has(actual: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(actual, dict):
        return False
    return all(k in actual and _as_json(actual[k]) == _as_json(v) for k, v in wanted.items())


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
