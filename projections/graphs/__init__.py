"""Read side of durable graphs."""

from agentledger.projections.graphs.runs import (
    GraphRunsProjection,
    GraphRunView,
    GraphStepView,
    get_graph_run,
    list_graph_runs,
)

__all__ = [
    "GraphRunView",
    "GraphRunsProjection",
    "GraphStepView",
    "get_graph_run",
    "list_graph_runs",
]
