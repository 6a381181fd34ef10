"""What an evaluation's numbers mean: a case's result, the aggregate, the pass
thresholds, and the case-by-case comparison of two evaluations. Pure functions over
recorded values, so the worker, the report projection, the CLI and the HTML report all
agree.

- A case **passes** when its run completed, every assertion (an evaluator answering
  true/false) is true and no evaluator failed. A case whose run did not complete is
  **errored** (and not passed).
- A **score** (an evaluator answering a number) is averaged over the cases that have it.
- **Thresholds** (`[datasets.<name>.thresholds]`): `pass_rate` and `assertion_rate`
  (lowest fractions), `scores.<evaluator>` (lowest mean), `max_p95_ms` and
  `max_cost_usd` (highest p95 latency, highest total cost). An evaluation meets its
  thresholds when none is breached.
- **Compare**: a case regressed when it passed in A and not in B, an assertion went from
  true to false, or a score fell by more than the tolerance; improved for the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CaseChange",
    "CaseResult",
    "Summary",
    "Thresholds",
    "compare",
    "percentile",
    "summarise",
]


class CaseResult(BaseModel):
    """One case's run and scores (what `CaseScored` records)."""

    model_config = ConfigDict(frozen=True)

    case: str
    agent: str
    task_id: str
    run_id: str | None = None
    status: str
    """The run's status: completed, failed, rejected, paused."""
    prompt: str = ""
    output: Any = None
    expected_output: Any = None
    error: str | None = None
    duration_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    scores: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    assertions: dict[str, bool] = Field(default_factory=dict)
    reasons: dict[str, str] = Field(default_factory=dict)
    evaluator_failures: dict[str, str] = Field(default_factory=dict)

    @property
    def errored(self) -> bool:
        return self.status != "completed"

    @property
    def passed(self) -> bool:
        return not self.errored and all(self.assertions.values()) and not self.evaluator_failures


class Thresholds(BaseModel):
    """When an evaluation passes as a whole (every field optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pass_rate: float | None = Field(default=None, ge=0, le=1)
    assertion_rate: float | None = Field(default=None, ge=0, le=1)
    scores: dict[str, float] = Field(default_factory=dict)
    max_p95_ms: float | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, ge=0)

    def breaches(self, summary: Summary) -> list[str]:
        """What the summary falls short of, one line each (empty: it passes)."""
        found = []
        if self.pass_rate is not None and summary.pass_rate < self.pass_rate:
            found.append(f"pass rate {summary.pass_rate:.1%} < {self.pass_rate:.1%}")
        rate = summary.assertion_rate
        if self.assertion_rate is not None and (rate is None or rate < self.assertion_rate):
            shown = "n/a" if rate is None else f"{rate:.1%}"
            found.append(f"assertion rate {shown} < {self.assertion_rate:.1%}")
        for name, lowest in self.scores.items():
            mean = summary.scores.get(name)
            if mean is None or mean < lowest:
                shown = "n/a" if mean is None else f"{mean:.3f}"
                found.append(f"score {name} {shown} < {lowest}")
        p95 = summary.latency_p95_ms
        if self.max_p95_ms is not None and p95 is not None and p95 > self.max_p95_ms:
            found.append(f"p95 latency {p95:.0f} ms > {self.max_p95_ms:.0f} ms")
        if self.max_cost_usd is not None and summary.cost_usd > self.max_cost_usd:
            found.append(f"cost ${summary.cost_usd:.6f} > ${self.max_cost_usd:.6f}")
        return found


class Summary(BaseModel):
    """An evaluation's aggregate over the cases scored so far."""

    model_config = ConfigDict(frozen=True)

    cases: int
    done: int
    passed: int
    failed: int
    errored: int
    pass_rate: float
    """Passed over all cases (a case not done yet counts as not passed)."""
    assertion_rate: float | None
    scores: dict[str, float]
    """Mean of each score over the cases that have it."""
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    evaluators: list[str]
    """Every evaluator name seen, in first-seen order."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarise(results: Iterable[CaseResult], cases: int | None = None) -> Summary:
    done = list(results)
    total = len(done) if cases is None else max(cases, len(done))
    checks = [ok for r in done for ok in r.assertions.values()]
    sums: dict[str, list[float]] = {}
    names: dict[str, None] = {}
    for r in done:
        for kind in (r.scores, r.labels, r.assertions, r.evaluator_failures):
            names.update(dict.fromkeys(kind))
        for name, value in r.scores.items():
            sums.setdefault(name, []).append(value)
    latencies = [r.duration_ms for r in done if r.duration_ms is not None]
    passed = sum(r.passed for r in done)
    errored = sum(r.errored for r in done)
    return Summary(
        cases=total,
        done=len(done),
        passed=passed,
        failed=len(done) - passed - errored,
        errored=errored,
        pass_rate=passed / total if total else 0.0,
        assertion_rate=sum(checks) / len(checks) if checks else None,
        scores={n: sum(v) / len(v) for n, v in sums.items()},
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_max_ms=max(latencies) if latencies else None,
        cost_usd=sum(r.cost_usd or 0.0 for r in done),
        input_tokens=sum(r.input_tokens for r in done),
        output_tokens=sum(r.output_tokens for r in done),
        evaluators=list(names),
    )


Change = Literal["regression", "improvement", "unchanged", "new", "gone"]


class CaseChange(BaseModel):
    """How one case moved from evaluation A to evaluation B."""

    model_config = ConfigDict(frozen=True)

    case: str
    change: Change
    a_passed: bool | None
    b_passed: bool | None
    details: list[str]
    """What moved, e.g. `EqualsExpected: true -> false`, `score Judge 0.9 -> 0.4`."""


def compare(
    a: Sequence[CaseResult], b: Sequence[CaseResult], tolerance: float = 0.05
) -> list[CaseChange]:
    """Case by case, in A's order then B's new cases."""
    in_b = {r.case: r for r in b}
    changes = []
    for old in a:
        new = in_b.pop(old.case, None)
        if new is None:
            changes.append(
                CaseChange(
                    case=old.case, change="gone", a_passed=old.passed, b_passed=None, details=[]
                )
            )
            continue
        worse: list[str] = []
        better: list[str] = []
        if old.status != new.status:
            (worse if old.status == "completed" else better).append(
                f"run {old.status} -> {new.status}"
            )
        for name in dict.fromkeys([*old.assertions, *new.assertions]):
            was, now = old.assertions.get(name), new.assertions.get(name)
            if was is True and now is not True:
                worse.append(f"{name}: true -> {_shown(now)}")
            elif was is not True and now is True:
                better.append(f"{name}: {_shown(was)} -> true")
        for name in dict.fromkeys([*old.scores, *new.scores]):
            was_s, now_s = old.scores.get(name), new.scores.get(name)
            if was_s is None or now_s is None:
                continue
            if now_s < was_s - tolerance:
                worse.append(f"score {name} {was_s:.3g} -> {now_s:.3g}")
            elif now_s > was_s + tolerance:
                better.append(f"score {name} {was_s:.3g} -> {now_s:.3g}")
        for name in dict.fromkeys([*old.evaluator_failures, *new.evaluator_failures]):
            if name in new.evaluator_failures and name not in old.evaluator_failures:
                worse.append(f"{name} failed: {new.evaluator_failures[name]}")
            elif name in old.evaluator_failures and name not in new.evaluator_failures:
                better.append(f"{name} no longer fails")
        if old.passed and not new.passed:
            change: Change = "regression"
        elif new.passed and not old.passed:
            change = "improvement"
        elif worse:
            change = "regression"
        elif better:
            change = "improvement"
        else:
            change = "unchanged"
        changes.append(
            CaseChange(
                case=old.case,
                change=change,
                a_passed=old.passed,
                b_passed=new.passed,
                details=worse + better,
            )
        )
    for new in in_b.values():
        changes.append(
            CaseChange(case=new.case, change="new", a_passed=None, b_passed=new.passed, details=[])
        )
    return changes


def _shown(value: bool | None) -> str:
    return "missing" if value is None else str(value).lower()
