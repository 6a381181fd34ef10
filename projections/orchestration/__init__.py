"""Read side of multi-agent orchestration: workflows, their child tasks and messages."""

from agentledger.projections.orchestration.workflows import (
    WorkflowChildView,
    WorkflowMessageView,
    WorkflowsProjection,
    WorkflowView,
    get_workflow,
    list_workflows,
    workflow_messages_of,
)

__all__ = [
    "WorkflowChildView",
    "WorkflowMessageView",
    "WorkflowView",
    "WorkflowsProjection",
    "get_workflow",
    "list_workflows",
    "workflow_messages_of",
]
