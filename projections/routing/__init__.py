"""Read side of semantic routing."""

from agentledger.projections.routing.decisions import (
    RouteDecisionsProjection,
    RouteDecisionView,
    list_route_decisions,
)

__all__ = ["RouteDecisionView", "RouteDecisionsProjection", "list_route_decisions"]
