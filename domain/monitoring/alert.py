"""The alert aggregate: one per rule and agent, raised and cleared in turn.

Recording a change is how a monitor claims it: with two monitors (two projector
processes) the second save of the same change meets a version conflict, so an alert is
raised, and published, once."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from agentledger.domain.errors import InvalidTransition

__all__ = ["Alert", "alert_id"]


def alert_id(rule: str, agent: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"agentledger:alert:{rule}:{agent}")


class Alert(Aggregate):
    TOPIC = "agentledger.Alert"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.Alert.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.Alert.Created"

    class AlertOpened(Created):
        """A rule's alert for an agent was first needed (recorded with its first raise)."""

        TOPIC = "agentledger.Alert.AlertOpened"
        class_version = 1
        rule: str
        agent: str

    class AlertRaised(Event):
        """A rule's value went above its threshold with enough samples."""

        TOPIC = "agentledger.Alert.AlertRaised"
        class_version = 1
        metric: str
        window: str
        value: float
        threshold: float
        samples: int

    class AlertCleared(Event):
        """The value fell to the rule's clear level (or the window emptied)."""

        TOPIC = "agentledger.Alert.AlertCleared"
        class_version = 1
        metric: str
        window: str
        value: Any
        threshold: float
        samples: int

    @staticmethod
    def create_id(rule: str, agent: str) -> UUID:
        return alert_id(rule, agent)

    @event(AlertOpened)
    def __init__(self, rule: str, agent: str) -> None:
        self.rule = rule
        self.agent = agent
        self.active = False

    def raise_alert(
        self, metric: str, window: str, value: float, threshold: float, samples: int
    ) -> None:
        if self.active:
            raise InvalidTransition("raise an alert", "raised")
        self._raised(
            metric=metric, window=window, value=value, threshold=threshold, samples=samples
        )

    @event(AlertRaised)
    def _raised(
        self, metric: str, window: str, value: float, threshold: float, samples: int
    ) -> None:
        self.active = True

    def clear(
        self, metric: str, window: str, value: float | None, threshold: float, samples: int
    ) -> None:
        if not self.active:
            raise InvalidTransition("clear an alert", "clear")
        self._cleared(
            metric=metric, window=window, value=value, threshold=threshold, samples=samples
        )

    @event(AlertCleared)
    def _cleared(
        self, metric: str, window: str, value: Any, threshold: float, samples: int
    ) -> None:
        self.active = False
