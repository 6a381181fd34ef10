"""`agentledger store-size` counts the aggregates of every type (regression: it knew only
the agent-run, conversation and rejection creation events, so graph runs and route
decisions showed 0 aggregates)."""

from __future__ import annotations

from agentledger.domain.event_registry import EVENT_CLASSES
from agentledger.handlers.retention import _is_creation


def test_every_aggregate_type_has_its_creation_event_counted() -> None:
    types = {cls.TOPIC.split(".")[1] for cls in EVENT_CLASSES}
    counted = {cls.TOPIC.split(".")[1] for cls in EVENT_CLASSES if _is_creation(cls.TOPIC)}
    assert counted == types
    assert _is_creation("agentledger.GraphRun.GraphStarted")
    assert _is_creation("agentledger.RouteDecision.RouteDecided")
    assert not _is_creation("agentledger.AgentRun.RunCompleted")
