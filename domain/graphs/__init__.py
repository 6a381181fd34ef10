"""Durable graph workflows: the graph-run aggregate and its history."""

from agentledger.domain.graphs.run import GraphHistory, GraphRun, GraphRunStatus, RecordedStep

__all__ = ["GraphHistory", "GraphRun", "GraphRunStatus", "RecordedStep"]
