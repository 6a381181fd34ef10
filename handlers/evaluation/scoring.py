"""Scoring a recorded run with a dataset's evaluators: the same code for a case just
run (`agentledger eval run`), a run from history (`eval history`) and a replayed one
(`eval replay`). It reads only what the run recorded, so scoring never calls the
agent's model (a `Judge` evaluator calls its own judge model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_evals.evaluators import EvaluationResult, Evaluator, EvaluatorContext
from pydantic_evals.evaluators._run_evaluator import run_evaluator
from pydantic_evals.evaluators.evaluator import EvaluatorFailure
from pydantic_evals.otel._errors import SpanTreeRecordingError

from agentledger.domain.evaluation.scores import CaseResult
from agentledger.domain.run import AgentRun

__all__ = ["RunFacts", "run_facts", "score_run"]

_NO_SPANS = SpanTreeRecordingError(
    "agentledger scores recorded runs: use the attributes (tool_calls) instead of spans"
)


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What a recorded run says, as evaluators need it."""

    task_id: str
    run_id: str
    agent: str
    prompt: str
    status: str
    """completed, failed, paused, or running (no terminal event)."""
    output: Any = None
    error: str | None = None
    duration_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    finished_at: str | None = None


def run_facts(events: Sequence[Any]) -> RunFacts:
    """The facts of one run's events (an `AgentRun`'s, first `RunRequested`)."""
    requested = events[0]
    assert isinstance(requested, AgentRun.RunRequested)
    calls: list[dict[str, Any]] = []
    input_tokens = output_tokens = 0
    status, output, error = "running", None, None
    duration_ms: float | None = None
    cost: float | None = None
    finished_at = None
    for e in events[1:]:
        if isinstance(e, AgentRun.ToolCallStarted):
            calls.append({"tool": e.tool_name, "args": e.args, "id": e.tool_call_id})
        elif isinstance(e, AgentRun.ModelResponseReceived):
            input_tokens += e.input_tokens
            output_tokens += e.output_tokens
        elif isinstance(e, AgentRun.RunPaused):
            status = "paused"
        elif isinstance(e, AgentRun.RunCompleted):
            status, output = "completed", e.output
            duration_ms, cost = e.duration_ms, e.cost_usd
            input_tokens, output_tokens = e.input_tokens, e.output_tokens
            finished_at = e.timestamp.isoformat()
        elif isinstance(e, AgentRun.RunFailed):
            status, error = "failed", f"{e.error_kind}: {e.message}"
            duration_ms = e.duration_ms
            finished_at = e.timestamp.isoformat()
    return RunFacts(
        task_id=requested.task_id,
        run_id=str(requested.originator_id),
        agent=requested.agent,
        prompt=requested.prompt,
        status=status,
        output=output,
        error=error,
        duration_ms=duration_ms,
        cost_usd=cost,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tool_calls=calls,
        metadata=dict(requested.metadata),
        finished_at=finished_at,
    )


async def score_run(
    *,
    case: str,
    facts: RunFacts,
    evaluators: Sequence[Evaluator[Any, Any, Any]],
    expected_output: Any = None,
    metadata: dict[str, Any] | None = None,
    output_type: Any = str,
    agent: str | None = None,
) -> CaseResult:
    """Every evaluator's answer on the run. A run that did not complete is errored and
    not judged (its output is not an answer to judge); an evaluator that raises is
    recorded as that evaluator's failure, never as the case's score."""
    result: dict[str, Any] = {
        "case": case,
        "agent": agent or facts.agent,
        "task_id": facts.task_id,
        "run_id": facts.run_id,
        "status": facts.status,
        "prompt": facts.prompt,
        "output": facts.output,
        "expected_output": expected_output,
        "error": facts.error,
        "duration_ms": facts.duration_ms,
        "cost_usd": facts.cost_usd,
        "input_tokens": facts.input_tokens,
        "output_tokens": facts.output_tokens,
        "tool_calls": len(facts.tool_calls),
    }
    scores: dict[str, float] = {}
    labels: dict[str, str] = {}
    assertions: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    failures: dict[str, str] = {}
    if facts.status == "completed":
        metrics: dict[str, int | float] = {
            "input_tokens": facts.input_tokens,
            "output_tokens": facts.output_tokens,
            "tool_calls": len(facts.tool_calls),
        }
        if facts.duration_ms is not None:
            metrics["duration_ms"] = facts.duration_ms
        if facts.cost_usd is not None:
            metrics["cost_usd"] = facts.cost_usd
        ctx: EvaluatorContext[Any, Any, Any] = EvaluatorContext(
            name=case,
            inputs=facts.prompt,
            metadata=metadata,
            expected_output=expected_output,
            output=facts.output,
            duration=(facts.duration_ms or 0.0) / 1000,
            _span_tree=_NO_SPANS,
            attributes={
                "tool_calls": facts.tool_calls,
                "agent": facts.agent,
                "run_id": facts.run_id,
                "status": facts.status,
                "output_type": output_type,
            },
            metrics=metrics,
        )
        for evaluator in evaluators:
            found = await run_evaluator(evaluator, ctx)
            if isinstance(found, EvaluatorFailure):
                failures[found.name] = f"{found.error_type}: {found.error_message}"[:2000]
                continue
            for one in found:
                _keep(one, scores, labels, assertions, reasons)
    return CaseResult.model_validate(
        {
            **result,
            "scores": scores,
            "labels": labels,
            "assertions": assertions,
            "reasons": reasons,
            "evaluator_failures": failures,
        }
    )


def _keep(
    one: EvaluationResult[Any],
    scores: dict[str, float],
    labels: dict[str, str],
    assertions: dict[str, bool],
    reasons: dict[str, str],
) -> None:
    name, value = one.name, one.value
    if isinstance(value, bool):
        assertions[name] = value
    elif isinstance(value, int | float):
        scores[name] = float(value)
    else:
        labels[name] = str(value)
    if one.reason:
        reasons[name] = str(one.reason)[:2000]
