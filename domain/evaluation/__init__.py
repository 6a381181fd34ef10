"""Evaluation: datasets of cases run as recorded agent runs and scored (the task
contract, the `Evaluation` aggregate, and what its numbers mean)."""

from agentledger.domain.evaluation.evaluation import Evaluation, evaluation_id_for
from agentledger.domain.evaluation.scores import (
    CaseChange,
    CaseResult,
    Summary,
    Thresholds,
    compare,
    summarise,
)
from agentledger.domain.evaluation.tasks import (
    EvaluationOutcome,
    EvaluationProgress,
    RunEvaluation,
    case_task_id,
)

__all__ = [
    "CaseChange",
    "CaseResult",
    "Evaluation",
    "EvaluationOutcome",
    "EvaluationProgress",
    "RunEvaluation",
    "Summary",
    "Thresholds",
    "case_task_id",
    "compare",
    "evaluation_id_for",
    "summarise",
]
