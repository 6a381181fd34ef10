"""The evaluation task contract: score an agent against a dataset of cases.

Publish `RunEvaluation` to `<prefix>.tasks.eval.<dataset>` (header `Nats-Msg-Id:
<task_id>`). The eval worker records the evaluation (`EvaluationStarted`: every case,
its agent and its run's task id), runs every case as a real, recorded agent run (a
plain `RunAgent` on `<prefix>.tasks.run.<agent>`, tagged in its metadata with the
evaluation), at most `concurrency` at a time so they spread over the workers, scores
each finished run with the dataset's evaluators (`CaseScored`), and ends with the
aggregate and the thresholds (`EvaluationFinished`). Its `EvaluationOutcome` goes to
`<prefix>.results.<task_id>` like every outcome. While it runs, progress goes out (core
NATS, best effort) on `<prefix>.evaluations.<task_id>.progress`.

A case's task id is derived from the evaluation's (`case_task_id`), so an evaluation
taken up again after a worker crash finds the runs its cases already had: a finished
case is never run again, a case in flight is resumed like any run.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agentledger.domain.tasks import (
    ID_PATTERN,
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_CHARS,
    RunError,
)

__all__ = [
    "EVALUATION_KEY",
    "EVAL_CASE_KEY",
    "MAX_CONCURRENCY",
    "EvaluationOutcome",
    "EvaluationProgress",
    "RunEvaluation",
    "case_task_id",
]

MAX_CONCURRENCY = 256
EVALUATION_KEY = "evaluation"
"""The metadata key that tags a case's run with its evaluation's task id."""
EVAL_CASE_KEY = "eval_case"
"""The metadata key holding the case's name."""

_Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
_AgentOrAll = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9_\-:]{1,200})$")]


class RunEvaluation(BaseModel):
    """Run every case of the catalog's dataset `dataset` and score it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="Client-chosen id; idempotency key.")
    dataset: str = Field(pattern=ID_PATTERN, description="Dataset name in the catalog.")
    agents: dict[_AgentOrAll, _Id] = Field(
        default_factory=dict,
        max_length=METADATA_MAX_KEYS,
        description='Agent substitutions, case agent -> agent that runs it ("*" for every'
        " case): how a new version of an agent is evaluated on the same cases.",
    )
    label: str | None = Field(
        default=None, max_length=200, description="Free text naming this evaluation (a version)."
    )
    concurrency: Annotated[int, Field(strict=True, ge=1, le=MAX_CONCURRENCY)] | None = Field(
        default=None,
        description="Cases in flight at once (default: the dataset's, else the setting).",
    )
    cases: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=10_000, description="Only these cases (by name)."
    )
    metadata: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_MAX_CHARS)],
        Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
    ] = Field(default_factory=dict, max_length=METADATA_MAX_KEYS - 4)


EvaluationStatus = Literal["completed", "failed", "rejected"]


class EvaluationOutcome(BaseModel):
    """Published to `<prefix>.results.<task_id>` when the evaluation ends."""

    model_config = ConfigDict(frozen=True)

    task_id: str | None
    status: EvaluationStatus
    """`completed`: every case was run and scored (whatever the scores);
    `failed`: the evaluation itself could not go on; `rejected`: bad task."""
    dataset: str | None = None
    evaluation_id: str | None = None
    cases: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    pass_rate: float | None = None
    thresholds_met: bool | None = None
    breaches: list[str] = Field(default_factory=list)
    duration_ms: float | None = None
    error: RunError | None = None


class EvaluationProgress(BaseModel):
    """Best-effort progress on `<prefix>.evaluations.<task_id>.progress`."""

    task_id: str
    total: int
    done: int
    passed: int
    case: str | None = None
    case_passed: bool | None = None
    finished: bool = False


def case_task_id(evaluation_task_id: str, index: int) -> str:
    """The task id of case `index` of an evaluation: the same on every delivery."""
    base = evaluation_task_id
    if len(base) > 180:
        base = "eval-" + hashlib.sha256(base.encode()).hexdigest()[:32]
    return f"{base}:case-{index}"


def case_metadata(evaluation_task_id: str, case: str, label: str | None) -> dict[str, Any]:
    """What tags a case's run (metadata keys `evaluation`, `eval_case`, `eval_label`)."""
    tags = {EVALUATION_KEY: evaluation_task_id, EVAL_CASE_KEY: case[:METADATA_VALUE_MAX_CHARS]}
    if label:
        tags["eval_label"] = label
    return tags
