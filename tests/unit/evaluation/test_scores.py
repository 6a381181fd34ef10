"""What an evaluation's numbers mean: pass, errored, the aggregate, thresholds and the
case-by-case comparison."""

from __future__ import annotations

from agentledger.domain.evaluation.scores import CaseResult, Thresholds, compare, summarise


def result(case: str, **fields: object) -> CaseResult:
    values: dict[str, object] = {
        "case": case,
        "agent": "a",
        "task_id": f"t:{case}",
        "status": "completed",
    }
    values.update(fields)
    return CaseResult.model_validate(values)


def test_a_case_passes_only_when_its_run_completed_and_every_assertion_held() -> None:
    assert result("ok", assertions={"x": True}).passed
    assert not result("false", assertions={"x": True, "y": False}).passed
    assert not result("evaluator-broke", evaluator_failures={"Judge": "boom"}).passed
    errored = result("err", status="failed", assertions={"x": True})
    assert errored.errored and not errored.passed
    assert result("scores only", scores={"s": 0.1}).passed  # a score is not a verdict


def test_the_summary_counts_cases_not_done_as_not_passed() -> None:
    done = [
        result("a", assertions={"x": True}, scores={"j": 1.0}, duration_ms=10, cost_usd=0.5),
        result("b", assertions={"x": False}, scores={"j": 0.0}, duration_ms=30),
        result("c", status="failed", duration_ms=20),
    ]
    s = summarise(done, cases=4)
    assert (s.cases, s.done, s.passed, s.failed, s.errored) == (4, 3, 1, 1, 1)
    assert s.pass_rate == 0.25
    assert s.assertion_rate == 0.5
    assert s.scores == {"j": 0.5}
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_max_ms) == (20, 30, 30)
    assert s.cost_usd == 0.5
    assert s.evaluators == ["j", "x"] or set(s.evaluators) == {"j", "x"}


def test_thresholds_name_each_breach() -> None:
    s = summarise(
        [
            result(
                "a", assertions={"x": True}, scores={"Judge": 0.4}, duration_ms=900, cost_usd=2.0
            ),
            result("b", assertions={"x": False}),
        ]
    )
    breaches = Thresholds(
        pass_rate=0.9, scores={"Judge": 0.8, "Missing": 0.1}, max_p95_ms=500, max_cost_usd=1.0
    ).breaches(s)
    assert breaches == [
        "pass rate 50.0% < 90.0%",
        "score Judge 0.400 < 0.8",
        "score Missing n/a < 0.1",
        "p95 latency 900 ms > 500 ms",
        "cost $2.000000 > $1.000000",
    ]
    assert Thresholds(pass_rate=0.5).breaches(s) == []


def test_compare_finds_regressions_improvements_and_moved_cases() -> None:
    a = [
        result("same", assertions={"x": True}),
        result("worse", assertions={"x": True, "tool": True}),
        result("better", assertions={"x": False}),
        result("score-drop", scores={"Judge": 0.9}),
        result("noise", scores={"Judge": 0.9}),
        result("crashed", assertions={"x": True}),
        result("gone"),
    ]
    b = [
        result("same", assertions={"x": True}),
        result("worse", assertions={"x": False, "tool": True}),
        result("better", assertions={"x": True}),
        result("score-drop", scores={"Judge": 0.4}),
        result("noise", scores={"Judge": 0.88}),
        result("crashed", status="failed"),
        result("new"),
    ]
    changes = {c.case: c for c in compare(a, b)}
    assert {k: c.change for k, c in changes.items()} == {
        "same": "unchanged",
        "worse": "regression",
        "better": "improvement",
        "score-drop": "regression",
        "noise": "unchanged",
        "crashed": "regression",
        "gone": "gone",
        "new": "new",
    }
    assert changes["worse"].details == ["x: true -> false"]
    assert changes["score-drop"].details == ["score Judge 0.9 -> 0.4"]
    assert changes["crashed"].details[0] == "run completed -> failed"
    assert list(changes)[-1] == "new"
