"""The route task contract: send a prompt to whichever catalog route fits it by meaning.

Publish `RouteTask` to `<prefix>.tasks.route` (header `Nats-Msg-Id: <task_id>`). The
worker scores the prompt against every route, records the decision (`RouteDecided`:
every score, the thresholds, the chosen route, the method), then runs the route's agent
as a normal agent run with the same task id, linked to the decision. The outcome, a
`RouteOutcome`, goes to `<prefix>.results.<task_id>` like every outcome, and names the
route. A prompt that fits no route, where no fallback is configured, ends with status
`failed` and error kind `no_route` (the scores are in `route`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from agentledger.domain.tasks import (
    ID_PATTERN,
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_CHARS,
    RunError,
    Usage,
    UsageLimitsSpec,
    rfc3339_deadline,
)

__all__ = ["RouteChoice", "RouteOutcome", "RouteOutcomeStatus", "RouteTask"]

RouteOutcomeStatus = Literal["completed", "failed", "rejected", "paused", "waiting"]


class RouteTask(BaseModel):
    """Route `prompt` to the best-fitting route of the catalog and run its target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="Client-chosen id; idempotency key.")
    prompt: str = Field(min_length=1, description="The user prompt (routed, then run).")
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Conversation id of the routed run."
    )
    metadata: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_MAX_CHARS)],
        Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
    ] = Field(default_factory=dict, max_length=METADATA_MAX_KEYS)
    usage_limits: UsageLimitsSpec | None = None
    deadline: AwareDatetime | None = Field(
        default=None, description="RFC 3339 date-time with a timezone (for the routed run)."
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        return rfc3339_deadline(value)


class RouteChoice(BaseModel):
    """What the router decided, as the outcome tells it."""

    model_config = ConfigDict(frozen=True)

    name: str | None = Field(description="The chosen route; None: no route fitted.")
    target: str | None = Field(default=None, description="The agent (or graph) it runs.")
    target_kind: Literal["agent", "graph"] | None = None
    score: float | None = Field(default=None, description="The chosen route's score.")
    threshold: float | None = Field(default=None, description="The best route's threshold.")
    fallback: bool = Field(default=False, description="The fallback route was taken.")
    method: str
    scores: dict[str, float] = Field(description="Every route's score.")


class RouteOutcome(BaseModel):
    """Published to `<prefix>.results.<task_id>` and to the reply subject of a request."""

    model_config = ConfigDict(frozen=True)

    task_id: str | None
    status: RouteOutcomeStatus
    route: RouteChoice | None = None
    run_id: str | None = Field(default=None, description="The routed run (agent or graph).")
    agent: str | None = None
    graph: str | None = None
    session_id: str | None = None
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    duration_ms: float | None = None
    error: RunError | None = None
