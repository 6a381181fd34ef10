"""Routes as an operator declares them in the catalog.

    [routes.billing]
    agent = "billing"                 # or graph = "<graph>"
    description = "Invoices, charges, refunds, payment methods and receipts."
    examples = ["I was charged twice", "Send me my invoice", ...]   # a few, <= 20
    threshold = 0.55                  # optional: this route's own threshold

    [router]
    fallback = "general"              # optional: the route taken when none fits
    method = "hybrid"                 # optional: see agentledger.domain.routing.scoring
    margin = 0.0                      # optional: the best must beat the second by this

The route's name is what decisions and outcomes name; its target is the agent or graph
that runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentledger.domain.tasks import ID_PATTERN

__all__ = ["MAX_EXAMPLES", "METHODS", "Method", "RouteSpec", "RouterSpec", "routes_digest"]

Method = Literal["max_example", "description", "centroid", "hybrid", "logreg"]
METHODS: tuple[Method, ...] = ("max_example", "description", "centroid", "hybrid", "logreg")
MAX_EXAMPLES = 50


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ID_PATTERN)
    agent: str | None = Field(default=None, pattern=ID_PATTERN)
    graph: str | None = Field(default=None, pattern=ID_PATTERN)
    description: str = Field(default="", max_length=1000)
    examples: tuple[str, ...] = Field(default=(), max_length=MAX_EXAMPLES)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _one_target(self) -> RouteSpec:
        if (self.agent is None) == (self.graph is None):
            raise ValueError("a route names exactly one target: agent = ... or graph = ...")
        if not self.description.strip() and not any(e.strip() for e in self.examples):
            raise ValueError("a route needs a description or examples")
        return self

    @property
    def target(self) -> str:
        return self.agent or self.graph or ""

    @property
    def target_kind(self) -> Literal["agent", "graph"]:
        return "agent" if self.agent is not None else "graph"


class RouterSpec(BaseModel):
    """The catalog's routes and the `[router]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: tuple[RouteSpec, ...] = ()
    fallback: str | None = None
    """The route taken when no route fits (None: the decision is "no route")."""
    method: Method = "hybrid"
    margin: float = Field(default=0.0, ge=0.0, le=1.0)
    spelling: bool = True
    """Also score a spelling-corrected copy of each prompt (domain/routing/spelling.py)."""

    @model_validator(mode="after")
    def _fallback_known(self) -> RouterSpec:
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names):
            raise ValueError("route names must be unique")
        if self.fallback is not None and self.fallback not in names:
            raise ValueError(f"fallback {self.fallback!r} is not a route ({', '.join(names)})")
        return self

    def route(self, name: str) -> RouteSpec:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


def routes_digest(routes: tuple[RouteSpec, ...] | list[RouteSpec]) -> str:
    """A digest of what scoring depends on: names, descriptions and examples."""
    text = json.dumps(
        [[r.name, r.description, list(r.examples)] for r in sorted(routes, key=lambda r: r.name)],
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
