"""The registry of projections and the view models the query API returns.

View models live beside the projection that fills them; they are re-exported here so
callers have one place to import from.
"""

from __future__ import annotations

from agentledger.projections.base import Projection
from agentledger.projections.conversations import (
    ConversationsProjection,
    ConversationView,
    TurnView,
)
from agentledger.projections.evaluation.reports import EvaluationsProjection, EvaluationView
from agentledger.projections.graphs.runs import GraphRunsProjection, GraphRunView
from agentledger.projections.metrics import AgentMetrics, MetricsProjection
from agentledger.projections.monitoring.alerts import AlertsProjection, AlertView
from agentledger.projections.orchestration.workflows import (
    WorkflowChildView,
    WorkflowMessageView,
    WorkflowsProjection,
    WorkflowView,
)
from agentledger.projections.routing.decisions import RouteDecisionsProjection, RouteDecisionView
from agentledger.projections.runs import RunsProjection, RunView
from agentledger.projections.snapshots import PendingToolCall, SnapshotsProjection, SnapshotView
from agentledger.projections.transcript import TranscriptEntry

__all__ = [
    "ALL_PROJECTIONS",
    "AgentMetrics",
    "AlertView",
    "ConversationView",
    "EvaluationView",
    "GraphRunView",
    "PendingToolCall",
    "RouteDecisionView",
    "RunView",
    "SnapshotView",
    "TranscriptEntry",
    "TurnView",
    "UnknownView",
    "WorkflowChildView",
    "WorkflowMessageView",
    "WorkflowView",
    "projection_by_name",
]

ALL_PROJECTIONS: tuple[type[Projection], ...] = (
    RunsProjection,
    ConversationsProjection,
    MetricsProjection,
    SnapshotsProjection,
    GraphRunsProjection,
    RouteDecisionsProjection,
    WorkflowsProjection,
    AlertsProjection,
    EvaluationsProjection,
)


class UnknownView(LookupError):
    """No projection has the given name."""

    def __init__(self, name: str) -> None:
        valid = ", ".join(p.name for p in ALL_PROJECTIONS)
        super().__init__(f"unknown view {name!r}; valid views: {valid}")
        self.name = name


def projection_by_name(name: str) -> type[Projection]:
    """The projection class registered under `name`."""
    for projection in ALL_PROJECTIONS:
        if projection.name == name:
            return projection
    raise UnknownView(name)
