"""Identifiers: aggregate ids are derived from client-chosen ids with uuid5.

Deriving instead of generating is what makes a redelivered or duplicated task land on
the same aggregate, so it is never run twice.
"""

from __future__ import annotations

from typing import NewType
from uuid import UUID, uuid5

__all__ = [
    "RunId",
    "SessionId",
    "TaskId",
    "graph_run_id_for",
    "rejection_id_for",
    "route_decision_id_for",
    "router_model_id",
    "run_id_for",
    "session_aggregate_id_for",
]

TaskId = NewType("TaskId", str)
"""The client's id for one task; also the JetStream `Nats-Msg-Id` of its message."""
SessionId = NewType("SessionId", str)
"""The client's id for a conversation; tasks that share it share history."""
RunId = NewType("RunId", UUID)
"""The id of the agent-run aggregate of one task."""

_RUN_NAMESPACE = UUID("6f1c3a52-5b0e-4a43-9d55-0a6f7d0c2a11")
_SESSION_NAMESPACE = UUID("0b8f2e0c-92a4-4c6e-8d7d-3c5f0e9e6b21")
_REJECTION_NAMESPACE = UUID("d9a4e7b1-3f62-4c8a-9e55-7b1c2d3e4f50")
_GRAPH_RUN_NAMESPACE = UUID("3c2b9f4e-7a1d-4e8b-b6c0-5d9e2f1a7c34")
_ROUTE_NAMESPACE = UUID("8a7e5c31-2d4f-4b6a-9c0e-1f2a3b4c5d6e")
_ROUTER_MODEL_NAMESPACE = UUID("5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716")


def run_id_for(task_id: str) -> RunId:
    """The run aggregate id for a task id (stable across processes and versions)."""
    return RunId(uuid5(_RUN_NAMESPACE, task_id))


def session_aggregate_id_for(session_id: str) -> UUID:
    """The conversation aggregate id for a session id."""
    return uuid5(_SESSION_NAMESPACE, session_id)


def rejection_id_for(key: str) -> UUID:
    """The rejection aggregate id for a rejected message (task id, or message id)."""
    return uuid5(_REJECTION_NAMESPACE, key)


def graph_run_id_for(task_id: str) -> UUID:
    """The graph-run aggregate id for a graph task id."""
    return uuid5(_GRAPH_RUN_NAMESPACE, task_id)


def route_decision_id_for(task_id: str) -> UUID:
    """The route-decision aggregate id for a route task id (its linked agent run has
    the same task id, so `run_id_for(task_id)`)."""
    return uuid5(_ROUTE_NAMESPACE, task_id)


def router_model_id(prefix: str = "default") -> UUID:
    """The aggregate holding the router's fitted thresholds and weights."""
    return uuid5(_ROUTER_MODEL_NAMESPACE, prefix)
