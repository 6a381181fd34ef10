"""The public task contract: what clients publish and what they get back.

Its JSON schema (`agentledger schema`) is the contract; change it only compatibly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "ID_PATTERN",
    "OutcomeStatus",
    "RunAgent",
    "RunError",
    "RunOutcome",
    "Usage",
    "UsageLimitsSpec",
]

ID_PATTERN = r"^[A-Za-z0-9_\-:]{1,200}$"
"""Task, session and agent ids: one NATS subject token (no dots, wildcards or spaces)."""

OutcomeStatus = Literal["completed", "failed", "rejected"]


class UsageLimitsSpec(BaseModel):
    """Per-task limits; a run that would exceed one fails with `usage_limit_exceeded`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_limit: int | None = Field(default=50, ge=1, description="Model requests per run.")
    tool_calls_limit: int | None = Field(default=None, ge=0, description="Tool calls per run.")
    input_tokens_limit: int | None = Field(default=None, ge=1)
    output_tokens_limit: int | None = Field(default=None, ge=1)
    total_tokens_limit: int | None = Field(default=None, ge=1)


class RunAgent(BaseModel):
    """Run the named agent on a prompt. Publish to `<prefix>.tasks.run.<agent>` with
    header `Nats-Msg-Id: <task_id>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="Client-chosen id; idempotency key.")
    agent: str = Field(pattern=ID_PATTERN, description="Agent name in the catalog.")
    prompt: str = Field(min_length=1, description="The user prompt.")
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Conversation to continue."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Free-form labels.")
    usage_limits: UsageLimitsSpec | None = None
    deadline: AwareDatetime | None = Field(
        default=None, description="Fail with deadline_exceeded if not finished by then."
    )


class Usage(BaseModel):
    """Token and call counts of one run."""

    model_config = ConfigDict(frozen=True)

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


class RunError(BaseModel):
    """Why a run failed or a task was rejected."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="A stable error kind, e.g. unknown_agent, model_error.")
    message: str
    retryable: bool = False


class RunOutcome(BaseModel):
    """Published to `<prefix>.results.<task_id>` and to the reply subject of a request."""

    model_config = ConfigDict(frozen=True)

    task_id: str | None
    run_id: str | None = None
    agent: str | None = None
    session_id: str | None = None
    status: OutcomeStatus
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    duration_ms: float | None = None
    error: RunError | None = None
