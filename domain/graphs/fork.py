"""Where a graph run may be forked, and what the fork starts from (pure rules).

A graph run is forked at a checkpoint: event 1 (the start) or the version of a
`StepFinished` event (as `agentledger events` numbers them). The fork is a new run whose
events 2..N are copies of the parent's: the steps finished by then are served, not run
again, and the rest of the graph runs live from the state at N.

- The fork may start from another state (validated as the graph's state type by the
  caller): it replaces the state at N.
- Another input only fits the start (N = 1): later checkpoints already consumed the
  parent's input.
- A run that is itself a fork is forked at its own fork point or a later checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentledger.domain.fork import ForkError
from agentledger.domain.graphs.run import GraphRun

__all__ = ["GraphForkPlan", "checkpoints", "plan_graph_fork"]


@dataclass(frozen=True, kw_only=True)
class GraphForkPlan:
    at: int
    """The parent's event version the fork starts after."""
    copied: tuple[Any, ...]
    """The parent's events 2..at, to copy onto the fork."""
    state: Any
    """The graph state at the fork point (JSON), before any override."""


def checkpoints(parent: Sequence[Any]) -> list[tuple[int, str]]:
    """(version, what) of every point a run may be forked at. A run that is itself a
    fork is forked at its own fork point or later: its copies before that hold its
    parent's states (fork the parent for those)."""
    base = parent[0].fork_at or 1
    points = [(base, "start" if base == 1 else "fork point")]
    points += [
        (e.originator_version, e.node_id)
        for e in parent
        if isinstance(e, GraphRun.StepFinished) and e.originator_version > base
    ]
    return points


def plan_graph_fork(parent: Sequence[Any], at: int, *, new_inputs: bool) -> GraphForkPlan:
    """The plan of a fork of `parent` (a graph run's events, in order) at `at`;
    `ForkError` says why the point does not fit."""
    if not parent or not isinstance(parent[0], GraphRun.GraphStarted):
        raise ForkError("not a graph run")
    points = dict(checkpoints(parent))
    if at not in points:
        listed = ", ".join(f"{v} ({what})" for v, what in sorted(points.items()))
        raise ForkError(
            f"event {at} is not a checkpoint of graph run {parent[0].task_id!r}; fork at"
            f" one of: {listed}"
        )
    if new_inputs and at != 1:
        raise ForkError(
            f"a new input only fits a fork at 1 (the start): the steps up to event {at}"
            " consumed the parent's input"
        )
    copied = tuple(e for e in parent[1:] if e.originator_version <= at)
    # The state at the run's start (or own fork point) is its GraphStarted's; at a
    # later checkpoint, that step's.
    state = parent[0].state if at == (parent[0].fork_at or 1) else parent[at - 1].state
    return GraphForkPlan(at=at, copied=copied, state=state)
