"""The evaluation report views."""

from agentledger.projections.evaluation.reports import (
    EvaluationsProjection,
    EvaluationView,
    evaluation_cases,
    get_evaluation,
    list_evaluations,
)

__all__ = [
    "EvaluationView",
    "EvaluationsProjection",
    "evaluation_cases",
    "get_evaluation",
    "list_evaluations",
]
