"""Routes in the catalog: `[routes.<name>]` tables and the optional `[router]` table
(syntax: `agentledger.domain.routing.routes`). Checked when the catalog loads: a route
whose target is not in the catalog, a fallback that is no route, or a bad field is a
start-up error naming the route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentledger.domain.errors import first_problem
from agentledger.domain.routing.routes import RouterSpec, RouteSpec
from agentledger.handlers.refs import CatalogError

__all__ = ["router_spec"]


def router_spec(
    path: Path, data: dict[str, Any], agents: set[str] | None = None, graphs: set[str] | None = None
) -> RouterSpec:
    """The `[routes.*]` and `[router]` tables of a parsed catalog; with `agents` and
    `graphs`, every target must be one of them."""
    routes = []
    tables = data.get("routes", {})
    if not isinstance(tables, dict):
        raise CatalogError(f"catalog {path}: [routes] must be tables, one per route")
    for name, spec in tables.items():
        if not isinstance(spec, dict):
            raise CatalogError(f"catalog {path}: route {name!r} must be a table")
        try:
            route = RouteSpec.model_validate({**spec, "name": name})
        except ValidationError as e:
            raise CatalogError(
                f"catalog {path}: route {name!r}: {first_problem(e, 'route')}"
            ) from None
        if agents is not None and route.agent is not None and route.agent not in agents:
            raise CatalogError(
                f"catalog {path}: route {name!r} names unknown agent {route.agent!r}"
            )
        if graphs is not None and route.graph is not None and route.graph not in graphs:
            raise CatalogError(
                f"catalog {path}: route {name!r} names unknown graph {route.graph!r}"
            )
        routes.append(route)
    router = data.get("router", {})
    if not isinstance(router, dict):
        raise CatalogError(f"catalog {path}: [router] must be a table")
    try:
        return RouterSpec.model_validate({**router, "routes": routes})
    except ValidationError as e:
        raise CatalogError(f"catalog {path}: [router]: {first_problem(e, 'router')}") from None
