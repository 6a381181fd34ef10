"""Route decisions and the router's fitted model, as aggregates.

`RouteDecision` (one per route task, id from its task id): `RouteDecided` records every
score, the thresholds in force, the chosen route (or none), the method and the embedder,
and the linked run; `RouteFeedbackGiven` records an operator's verdict on it (`agentledger
route feedback`), which `agentledger route fit` learns from.

`RouterModel` (one per subject prefix): each `RouterFitted` holds what `route fit` learned
(method, per-route thresholds, weights) and the accuracy before and after on held-out
examples; workers route with the latest fit made for their routes and embedder.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.errors import InvalidTransition
from agentledger.domain.ids import route_decision_id_for

__all__ = ["RouteDecision", "RouterModel"]

JSON = Any


class RouteDecision(Aggregate):
    """The router's decision for one route task."""

    TOPIC = "agentledger.RouteDecision"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.RouteDecision.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.RouteDecision.Created"

    class RouteDecided(Created):
        """The prompt was scored against every route and a route chosen (or none)."""

        TOPIC = "agentledger.RouteDecision.RouteDecided"
        class_version = 1
        task_id: str
        prompt: str
        session_id: str | None
        metadata: dict[str, str]
        usage_limits: dict[str, int | None]
        deadline: str | None
        scores: dict[str, float]
        thresholds: dict[str, float]
        chosen: str | None
        target_kind: str | None
        target: str | None
        fallback: bool
        method: str
        embedder: str
        routes_digest: str
        """Which routes (names, descriptions, examples) were scored: a digest."""
        fit_version: int | None
        """The `RouterModel` version whose thresholds and weights were used (None: none)."""
        run_id: str | None
        """The linked run (agent or graph) the chosen route started."""

    class RouteFeedbackGiven(Event):
        """An operator said whether the decision was right, and which route was."""

        TOPIC = "agentledger.RouteDecision.RouteFeedbackGiven"
        class_version = 1
        correct: bool
        expected: str | None
        """The route that was right (None: no route should have been taken)."""
        note: str | None

    @staticmethod
    def create_id(task_id: str) -> UUID:
        return route_decision_id_for(task_id)

    @event(RouteDecided)
    def __init__(
        self,
        task_id: str,
        prompt: str,
        session_id: str | None,
        metadata: dict[str, str],
        usage_limits: dict[str, int | None],
        deadline: str | None,
        scores: dict[str, float],
        thresholds: dict[str, float],
        chosen: str | None,
        target_kind: str | None,
        target: str | None,
        fallback: bool,
        method: str,
        embedder: str,
        routes_digest: str,
        fit_version: int | None,
        run_id: str | None,
    ) -> None:
        self.task_id = task_id
        self.prompt = prompt
        self.session_id = session_id
        self.metadata = metadata
        self.usage_limits = usage_limits
        self.deadline = deadline
        self.scores = scores
        self.thresholds = thresholds
        self.chosen = chosen
        self.target_kind = target_kind
        self.target = target
        self.fallback = fallback
        self.method = method
        self.embedder = embedder
        self.routes_digest = routes_digest
        self.fit_version = fit_version
        self.run_id = run_id
        self.feedback: list[dict[str, Any]] = []

    def give_feedback(self, correct: bool, expected: str | None, note: str | None) -> None:
        if correct and expected != self.chosen:
            raise InvalidTransition(
                f"mark the decision correct for route {expected!r}: it chose {self.chosen!r}",
                "decided",
            )
        self._trigger_feedback(correct=correct, expected=expected, note=note)

    @event(RouteFeedbackGiven)
    def _trigger_feedback(self, correct: bool, expected: str | None, note: str | None) -> None:
        self.feedback.append({"correct": correct, "expected": expected, "note": note})


class RouterModel(Aggregate):
    """The fitted router: a new version on every `route fit`."""

    TOPIC = "agentledger.RouterModel"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.RouterModel.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.RouterModel.Created"

    class RouterModelStarted(Created):
        TOPIC = "agentledger.RouterModel.RouterModelStarted"
        class_version = 1
        name: str

    class RouterFitted(Event):
        """`route fit` learned these parameters (valid for `routes_digest` + `embedder`)."""

        TOPIC = "agentledger.RouterModel.RouterFitted"
        class_version = 1
        method: str
        embedder: str
        routes_digest: str
        params: JSON
        """Method parameters: thresholds per route, weights, margin (see `RouterParams`)."""
        examples: int
        held_out: int
        accuracy_before: float
        accuracy_after: float

    @staticmethod
    def create_id(name: str) -> UUID:
        from agentledger.domain.ids import router_model_id

        return router_model_id(name)

    @event(RouterModelStarted)
    def __init__(self, name: str) -> None:
        self.name = name
        self.fit: dict[str, Any] | None = None

    @event(RouterFitted)
    def record_fit(
        self,
        method: str,
        embedder: str,
        routes_digest: str,
        params: JSON,
        examples: int,
        held_out: int,
        accuracy_before: float,
        accuracy_after: float,
    ) -> None:
        self.fit = {
            "method": method,
            "embedder": embedder,
            "routes_digest": routes_digest,
            "params": params,
            "examples": examples,
            "held_out": held_out,
            "accuracy_before": accuracy_before,
            "accuracy_after": accuracy_after,
        }
