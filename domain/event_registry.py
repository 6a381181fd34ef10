"""Every stored event class, its stable topic, its version and its shape.

An event's shape is its fields and their types. A shape never changes under the same
`class_version`: a change bumps the version and adds `upcast_v<N>_v<N+1>`, so events
stored earlier still load (tests/unit/test_event_versions.py holds this to the golden
list of shapes in tests/fixtures/golden/event-shapes.json).
"""

from __future__ import annotations

from typing import Any

from agentledger.domain.conversation import Conversation
from agentledger.domain.evaluation.evaluation import Evaluation
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.monitoring.alert import Alert
from agentledger.domain.orchestration.scratchpad import Scratchpad
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.routing.decision import RouteDecision, RouterModel
from agentledger.domain.run import AgentRun

__all__ = ["EVENT_CLASSES", "event_shape", "event_shapes"]

_AGGREGATES: tuple[type[Any], ...] = (
    AgentRun,
    Conversation,
    TaskRejection,
    GraphRun,
    RouteDecision,
    RouterModel,
    Scratchpad,
    Alert,
    Evaluation,
)


def _events_of(aggregate: type[Any]) -> list[type[Any]]:
    base = aggregate.Event
    return [
        value
        for name, value in vars(aggregate).items()
        if isinstance(value, type)
        and issubclass(value, base)
        and value is not base
        and name != "Created"
    ]


EVENT_CLASSES: tuple[type[Any], ...] = tuple(e for a in _AGGREGATES for e in _events_of(a))
"""The concrete event classes of every aggregate (what the store holds)."""


def event_shape(cls: type[Any]) -> dict[str, str]:
    """Field name -> annotation, over the class and its agentledger bases."""
    fields: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("agentledger.domain."):
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                fields[name] = str(annotation)
    return fields


def event_shapes() -> dict[str, dict[str, Any]]:
    """topic -> {"class_version": n, "fields": {...}} for every event class."""
    return {
        cls.TOPIC: {"class_version": getattr(cls, "class_version", 1), "fields": event_shape(cls)}
        for cls in sorted(EVENT_CLASSES, key=lambda c: c.TOPIC)
    }
