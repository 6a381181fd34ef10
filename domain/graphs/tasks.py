"""The graph task contract: start a graph run, resume a paused one, cancel one, and the
outcome each gets.

Publish `RunGraph` to `<prefix>.tasks.graph.<graph>` (header `Nats-Msg-Id: <task_id>`),
`ResumeGraph` to `<prefix>.tasks.graph.resume` and `CancelGraph` to
`<prefix>.tasks.graph.cancel` (each with its own message id). The outcome of a graph
task goes to `<prefix>.results.<task_id>`, as for agent tasks; a paused run's outcome
has status `paused` and says what it waits for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from agentledger.domain.tasks import (
    ID_PATTERN,
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_CHARS,
    RunError,
    RunOutcome,
    rfc3339_deadline,
)

__all__ = [
    "RESERVED_GRAPH_NAMES",
    "CancelGraph",
    "ChildDone",
    "GraphOutcome",
    "GraphOutcomeStatus",
    "ResumeGraph",
    "RunGraph",
    "WaitingFor",
]

RESERVED_GRAPH_NAMES = frozenset({"resume", "cancel", "child"})
"""Names a graph cannot have: they are the resume, cancel and child-outcome subjects."""

MAX_STEPS_LIMIT = 100_000

GraphOutcomeStatus = Literal["completed", "failed", "paused", "waiting", "rejected"]
"""`waiting`: the run waits for child tasks it dispatched (never published as a result:
the result comes when the run ends or pauses)."""


class RunGraph(BaseModel):
    """Run the named graph on `inputs` (validated against the graph's input type)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="Client-chosen id; idempotency key.")
    graph: str = Field(pattern=ID_PATTERN, description="Graph name in the catalog.")
    inputs: Any = Field(default=None, description="The graph's input, as JSON.")
    metadata: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_MAX_CHARS)],
        Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
    ] = Field(default_factory=dict, max_length=METADATA_MAX_KEYS)
    max_steps: Annotated[int, Field(strict=True, ge=1, le=MAX_STEPS_LIMIT)] | None = Field(
        default=None, description="Step bound of this run (default: the catalog entry's)."
    )
    deadline: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 date-time with a timezone; no step starts after it.",
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        return rfc3339_deadline(value)


class ResumeGraph(BaseModel):
    """Give a paused graph run the input it waits for; it then goes on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="The paused run's task id.")
    resume_id: str = Field(
        pattern=ID_PATTERN, description="Id of this resume (its Nats-Msg-Id): applied once."
    )
    input: Any = Field(default=None, description="The input, as JSON.")


class CancelGraph(BaseModel):
    """End a running or paused graph run as failed (`cancelled`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN)
    reason: str = Field(default="cancelled by request", max_length=1000)


class ChildDone(BaseModel):
    """A child task a graph run dispatched has ended (`<prefix>.tasks.graph.child`, sent by
    the worker that ran the child). Recorded only for a child the run is still waiting
    for: a child task id is unguessable, so this cannot be forged for another run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="The parent graph run's task id.")
    child_task_id: str = Field(pattern=ID_PATTERN)
    outcome: RunOutcome


class WaitingFor(BaseModel):
    model_config = ConfigDict(frozen=True)

    node: str
    prompt: Any


class GraphOutcome(BaseModel):
    """Published to `<prefix>.results.<task_id>` for a graph task."""

    model_config = ConfigDict(frozen=True)

    task_id: str | None
    run_id: str | None = None
    graph: str | None = None
    status: GraphOutcomeStatus
    output: Any = None
    waiting_for: WaitingFor | None = None
    steps: int = 0
    duration_ms: float | None = None
    error: RunError | None = None
