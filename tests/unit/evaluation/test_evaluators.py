"""agentledger's evaluators, run the way an evaluation runs them (`score_run` over a
run's recorded facts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_evals.evaluators import EqualsExpected

from agentledger.handlers.evaluation.evaluators import (
    JsonEquals,
    Judge,
    MaxCost,
    MaxTokens,
    OutputValid,
    ToolCalled,
    judge_models,
)
from agentledger.handlers.evaluation.scoring import RunFacts, score_run


class Invoice(BaseModel):
    number: int
    total: float


def facts(output: Any = "ok", **fields: Any) -> RunFacts:
    values: dict[str, Any] = {
        "task_id": "t1",
        "run_id": "r1",
        "agent": "a",
        "prompt": "p",
        "status": "completed",
        "output": output,
        "duration_ms": 12.0,
    }
    values.update(fields)
    return RunFacts(**values)


async def test_json_equals_ignores_key_order_and_parses_strings() -> None:
    got = await score_run(
        case="c",
        facts=facts('{"b": [1, 2], "a": 1}'),
        evaluators=[JsonEquals()],
        expected_output={"a": 1, "b": [1, 2]},
    )
    assert got.assertions == {"JsonEquals": True}
    got = await score_run(
        case="c", facts=facts({"a": 2}), evaluators=[JsonEquals()], expected_output={"a": 1}
    )
    assert got.assertions == {"JsonEquals": False}
    assert got.reasons["JsonEquals"] == 'expected {"a": 1}, got {"a": 2}'
    skipped = await score_run(case="c", facts=facts(), evaluators=[JsonEquals()])
    assert skipped.assertions == {}


async def test_output_valid_checks_a_named_type_or_the_agents_output_type() -> None:
    ref = f"{__name__}:Invoice"
    good = await score_run(
        case="c", facts=facts('{"number": 1, "total": 2.5}'), evaluators=[OutputValid(type=ref)]
    )
    assert good.assertions == {"OutputValid": True}
    bad = await score_run(
        case="c", facts=facts({"number": "x"}), evaluators=[OutputValid(type=ref)]
    )
    assert bad.assertions == {"OutputValid": False}
    assert "number" in bad.reasons["OutputValid"]
    by_agent = await score_run(
        case="c", facts=facts({"number": 3}), evaluators=[OutputValid()], output_type=Invoice
    )
    assert by_agent.assertions == {"OutputValid": False}  # total is missing
    broken = await score_run(
        case="c", facts=facts(), evaluators=[OutputValid(type="no.such.module:X")]
    )
    assert "OutputValid" in broken.evaluator_failures and not broken.passed


async def test_tool_called_matches_name_argument_subset_and_count() -> None:
    calls = [
        {"tool": "add", "args": {"a": 2, "b": 3}},
        {"tool": "add", "args": {"a": 1, "b": 1}},
    ]
    run = facts(tool_calls=calls)
    got = await score_run(
        case="c",
        facts=run,
        evaluators=[
            ToolCalled(tool="add", args={"a": 2}),
            ToolCalled(tool="add", times=2),
            ToolCalled(tool="multiply", called=False),
        ],
    )
    assert got.assertions == {"ToolCalled:add": True, "ToolCalled:multiply": True}
    missing = await score_run(
        case="c", facts=run, evaluators=[ToolCalled(tool="add", args={"a": 9})]
    )
    assert missing.assertions == {"ToolCalled:add": False}
    assert missing.reasons["ToolCalled:add"] == 'no call of add with {"a": 9} (called: add)'
    too_many = await score_run(case="c", facts=run, evaluators=[ToolCalled(tool="add", times=1)])
    assert too_many.reasons["ToolCalled:add"] == "add called 2 time(s), expected 1"


async def test_cost_and_tokens_come_from_the_recorded_usage() -> None:
    run = facts(cost_usd=0.02, input_tokens=900, output_tokens=200)
    got = await score_run(
        case="c", facts=run, evaluators=[MaxCost(max_usd=0.01), MaxTokens(max_tokens=2000)]
    )
    assert got.assertions == {"MaxCost": False, "MaxTokens": True}
    unpriced = await score_run(case="c", facts=facts(), evaluators=[MaxCost(max_usd=0.01)])
    assert unpriced.assertions == {}


async def test_a_run_that_did_not_complete_is_errored_and_not_judged() -> None:
    got = await score_run(
        case="c",
        facts=facts(None, status="failed", error="tool_error: boom"),
        evaluators=[EqualsExpected()],
        expected_output="x",
    )
    assert got.errored and not got.passed and got.assertions == {}
    assert got.error == "tool_error: boom"


def _grader(seen: list[str]) -> FunctionModel:
    async def grade(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(str(messages[-1]))
        verdict = {"reason": "fine", "pass": True, "score": 0.75}
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, verdict)])

    return FunctionModel(grade, model_name="grader")


async def test_judge_uses_the_catalog_agents_model() -> None:
    seen: list[str] = []
    judge = Judge(agent="grader", rubric="is fine", score={"include_reason": True}, assertion=False)
    with judge_models({"grader": _grader(seen)}):
        got = await score_run(case="c", facts=facts("an answer"), evaluators=[judge])
    assert got.scores == {"Judge": 0.75}
    assert got.reasons == {"Judge": "fine"}
    assert len(seen) == 1 and "an answer" in seen[0]
    with judge_models({}):
        unknown = await score_run(case="c", facts=facts(), evaluators=[judge])
    assert "no catalog agent 'grader'" in unknown.evaluator_failures["Judge"]
