"""Graphs in the catalog: `[graphs.<name>] ref = "module:attribute"` names a pydantic-graph
`Graph` (built with `GraphBuilder(...).build()`), written with pydantic-graph's own API.

A worker checks every graph when it starts: a reference that does not import, an object
that is not a built graph, a synchronous step, or state / input / output types that
cannot be stored as JSON is a start-up error naming the graph.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic_graph import Graph, GraphBuilder, Step

from agentledger.domain.graphs.tasks import RESERVED_GRAPH_NAMES
from agentledger.domain.tasks import ID_PATTERN
from agentledger.handlers.refs import CatalogError, load_ref

__all__ = ["DEFAULT_MAX_STEPS", "GraphEntry", "check_graphs", "graph_entries"]

DEFAULT_MAX_STEPS = 500
"""Steps a graph run may take unless its catalog entry or task says otherwise."""


@dataclass(kw_only=True)
class GraphEntry:
    """One graph of the catalog."""

    name: str
    """The name tasks use (`<prefix>.tasks.graph.<name>`)."""
    ref: str
    description: str = ""
    max_steps: int = DEFAULT_MAX_STEPS
    builder: Callable[[], Graph] | None = field(default=None, repr=False)
    """Builds the graph instead of importing `ref` (a `[workflows.*]` entry)."""
    _graph: Graph | None = field(default=None, repr=False)

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = load_graph(self.ref) if self.builder is None else self.builder()
        return self._graph


def load_graph(ref: str) -> Graph:
    obj = load_ref(ref)
    if isinstance(obj, GraphBuilder):
        raise CatalogError(f"{ref!r} is a GraphBuilder: name the built graph (`.build()`)")
    if not isinstance(obj, Graph):
        raise CatalogError(f"{ref!r} is a {type(obj).__name__}, not a pydantic_graph.Graph")
    problems = []
    for node_id, node in obj.nodes.items():
        if isinstance(node, Step) and not inspect.iscoroutinefunction(node.call):
            problems.append(f"step {node_id!r} is not an async function")
    for what in ("state_type", "input_type", "output_type"):
        try:
            TypeAdapter(getattr(obj, what))
        except Exception as e:
            problems.append(f"its {what} cannot be stored as JSON: {e}")
    if problems:
        raise CatalogError(f"{ref!r}: " + "; ".join(problems))
    return obj


def graph_entries(path: Path, data: dict[str, Any]) -> dict[str, GraphEntry]:
    """The `[graphs.*]` tables of a parsed catalog file."""
    entries = {}
    for name, spec in data.get("graphs", {}).items():
        if name in RESERVED_GRAPH_NAMES or not re.match(ID_PATTERN, name):
            raise CatalogError(
                f"catalog {path}: graph {name!r} cannot be a graph's name (one subject token"
                " of letters, digits, _ - :, and not resume or cancel)"
            )
        if not isinstance(spec, dict) or "ref" not in spec:
            raise CatalogError(f"catalog {path}: graph {name!r} has no 'ref'")
        max_steps = spec.get("max_steps", DEFAULT_MAX_STEPS)
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise CatalogError(
                f"catalog {path}: graph {name!r}: max_steps must be a positive integer"
            )
        entries[name] = GraphEntry(
            name=name,
            ref=spec["ref"],
            description=spec.get("description", ""),
            max_steps=max_steps,
        )
    return entries


def check_graphs(entries: dict[str, GraphEntry]) -> list[str]:
    """Load every graph; one line per bad one."""
    problems = []
    for name in sorted(entries):
        try:
            entries[name].graph  # noqa: B018 (loads and caches it)
        except CatalogError as e:  # a workflow's error names it already
            problems.append(str(e) if entries[name].builder else f"graph {name!r}: {e}")
    return problems
