"""Workflows declared in the catalog: `[workflows.<name>]` builds a pattern's graph.

```toml
[workflows.opinions]
pattern = "parallel"            # sequential | parallel | supervisor | pipeline | handoff
agents = ["optimist", "skeptic", "realist"]
merge = "moderator"             # a merger agent, or "module:function" of the outcomes
policy = "best_effort"          # or fail_fast (the default)
step_timeout_s = 30             # each child must finish within this (optional)
max_steps = 50                  # the graph run's step bound (optional)
description = "..."
```

Per pattern: `sequential` and `parallel` take `agents`; `supervisor` takes `supervisor`,
`workers` and `max_rounds`; `pipeline` takes `stages = [{agent = "...", output =
"module:Type"}, ...]`; `handoff` takes `triage` and `specialists`. A workflow is a graph:
start it with a `RunGraph` on `<prefix>.tasks.graph.<name>`. Every agent it names must
be in the catalog's `[agents]`, and unknown keys are errors: a worker refuses to start
on a typo rather than failing the first task.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from pydantic_graph import Graph

from agentledger.domain.graphs.tasks import RESERVED_GRAPH_NAMES
from agentledger.domain.tasks import ID_PATTERN
from agentledger.handlers.graphs.catalog import DEFAULT_MAX_STEPS, GraphEntry
from agentledger.handlers.orchestration import patterns
from agentledger.handlers.refs import CatalogError, load_ref

__all__ = ["PATTERNS", "workflow_entries"]

_COMMON = {"pattern", "description", "step_timeout_s", "max_steps"}
PATTERNS: dict[str, set[str]] = {
    "sequential": {"agents"},
    "parallel": {"agents", "merge", "policy"},
    "supervisor": {"supervisor", "workers", "max_rounds"},
    "pipeline": {"stages"},
    "handoff": {"triage", "specialists"},
}
_REQUIRED: dict[str, set[str]] = {
    "sequential": {"agents"},
    "parallel": {"agents"},
    "supervisor": {"supervisor", "workers"},
    "pipeline": {"stages"},
    "handoff": {"triage", "specialists"},
}


def workflow_entries(
    path: Path, data: dict[str, Any], agents: set[str], graphs: set[str]
) -> dict[str, GraphEntry]:
    """The `[workflows.*]` tables of a parsed catalog, as graph entries."""
    entries = {}
    for name, spec in data.get("workflows", {}).items():
        where = f"catalog {path}: workflow {name!r}"
        if name in RESERVED_GRAPH_NAMES or not re.match(ID_PATTERN, name):
            raise CatalogError(
                f"{where}: not a valid name (one subject token, not resume/cancel/child)"
            )
        if name in graphs:
            raise CatalogError(f"{where}: a graph has that name already")
        if not isinstance(spec, dict):
            raise CatalogError(f"{where}: must be a table")
        pattern = spec.get("pattern")
        if pattern not in PATTERNS:
            raise CatalogError(
                f"{where}: pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}"
            )
        unknown = set(spec) - _COMMON - PATTERNS[pattern]
        if unknown:
            raise CatalogError(
                f"{where}: unknown key(s) for a {pattern}: {', '.join(sorted(unknown))}"
            )
        missing = _REQUIRED[pattern] - set(spec)
        if missing:
            raise CatalogError(f"{where}: a {pattern} needs {', '.join(sorted(missing))}")
        max_steps = spec.get("max_steps", DEFAULT_MAX_STEPS)
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise CatalogError(f"{where}: max_steps must be a positive integer")
        timeout = spec.get("step_timeout_s")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise CatalogError(f"{where}: step_timeout_s must be a positive number")
        # Built when the worker checks its catalog (which names the file).
        builder = partial(_checked_build, f"workflow {name!r}", pattern, spec, frozenset(agents))
        entries[name] = GraphEntry(
            name=name,
            ref=f"workflow:{pattern}",
            description=spec.get("description", ""),
            max_steps=max_steps,
            builder=builder,
        )
    return entries


def _names(where: str, spec: dict[str, Any], key: str, agents: frozenset[str]) -> list[str]:
    value = spec[key]
    names = [value] if isinstance(value, str) and key in ("supervisor", "triage") else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CatalogError(f"{where}: {key} must be a non-empty list of agent names")
    unknown = [n for n in names if n not in agents]
    if unknown:
        raise CatalogError(
            f"{where}: {key} names agents not in the catalog: {', '.join(unknown)}"
            f" (the catalog has: {', '.join(sorted(agents)) or 'none'})"
        )
    return names


def _checked_build(where: str, pattern: str, spec: dict[str, Any], agents: frozenset[str]) -> Graph:
    try:
        return _build(where, pattern, spec, agents)
    except CatalogError as e:
        if str(e).startswith(where):
            raise
        raise CatalogError(f"{where}: {e}") from None  # a reference that does not load
    except (ValueError, TypeError) as e:  # a helper refusing its arguments
        raise CatalogError(f"{where}: {e}") from None


def _build(where: str, pattern: str, spec: dict[str, Any], agents: frozenset[str]) -> Graph:
    timeout = spec.get("step_timeout_s")
    if pattern == "sequential":
        return patterns.sequential(_names(where, spec, "agents", agents), step_timeout_s=timeout)
    if pattern == "parallel":
        merge: Any = spec.get("merge")
        if isinstance(merge, str) and ":" in merge:
            merge = load_ref(merge)
            if not callable(merge):
                raise CatalogError(f"{where}: merge {spec['merge']!r} is not a function")
        elif merge is not None:
            _names(where, {"merge": [merge]}, "merge", agents)
        policy = spec.get("policy", "fail_fast")
        if policy not in ("fail_fast", "best_effort"):
            raise CatalogError(f"{where}: policy must be fail_fast or best_effort")
        return patterns.parallel(
            _names(where, spec, "agents", agents),
            merge=merge,
            policy=policy,
            step_timeout_s=timeout,
        )
    if pattern == "supervisor":
        rounds = spec.get("max_rounds", 8)
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise CatalogError(f"{where}: max_rounds must be a positive integer")
        return patterns.supervisor(
            _names(where, spec, "supervisor", agents)[0],
            _names(where, spec, "workers", agents),
            max_rounds=rounds,
            step_timeout_s=timeout,
        )
    if pattern == "pipeline":
        stages = spec["stages"]
        if not isinstance(stages, list) or not stages:
            raise CatalogError(f"{where}: stages must be a non-empty list of tables")
        built = []
        for i, stage in enumerate(stages, 1):
            if not isinstance(stage, dict) or set(stage) != {"agent", "output"}:
                raise CatalogError(f"{where}: stage {i} must have exactly agent and output")
            [agent] = _names(where, {"agent": [stage["agent"]]}, "agent", agents)
            built.append((agent, load_ref(str(stage["output"]))))
        return patterns.pipeline(built, step_timeout_s=timeout)
    return patterns.handoff(
        _names(where, spec, "triage", agents)[0],
        _names(where, spec, "specialists", agents),
        step_timeout_s=timeout,
    )
