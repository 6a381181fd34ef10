"""The public task contract: what clients publish and what they get back.

Its JSON schema (`agentledger schema`) is the contract; change it only compatibly.
Numbers and times are strict: a limit is a JSON integer (not `"5"`, `5.0` or `true`) and
a deadline an RFC 3339 string with a timezone (not a Unix timestamp), so what the schema
forbids is never accepted.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "ID_PATTERN",
    "METADATA_KEY_MAX_CHARS",
    "METADATA_MAX_KEYS",
    "METADATA_VALUE_MAX_CHARS",
    "OutcomeStatus",
    "PausedFor",
    "RunAgent",
    "RunError",
    "RunOutcome",
    "Usage",
    "UsageLimitsSpec",
    "rfc3339_deadline",
]

ID_PATTERN = r"^[A-Za-z0-9_\-:]{1,200}$"
"""Task, session and agent ids: one NATS subject token (no dots, wildcards or spaces)."""

OutcomeStatus = Literal["completed", "failed", "rejected", "paused"]
"""`paused`: the run waits for a person to resolve a side-effecting tool call whose effect
is unknown after a crash (`paused_for` says which; `agentledger tool resolve`)."""

METADATA_MAX_KEYS = 64
METADATA_KEY_MAX_CHARS = 128
METADATA_VALUE_MAX_CHARS = 4096
"""Labels, not documents: at most 64 keys of 1-128 characters with values of up to 4,096
(about 270,000 characters in all, against a prompt's default 32,768)."""

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

_Limit = Annotated[int, Field(strict=True)]


def rfc3339_deadline(value: object) -> object:
    """A deadline as given, if it is None, a datetime or an RFC 3339 string with a
    timezone; else a ValueError. Strict by hand: pydantic's strict mode still reads
    "1700000000" as a Unix timestamp, and strict checks after a before-validator see
    Python, not JSON."""
    if value is None or isinstance(value, datetime):
        return value
    if not (isinstance(value, str) and _RFC3339.match(value)):
        raise ValueError(
            "deadline must be an RFC 3339 date-time string with a timezone,"
            " e.g. 2030-01-01T12:00:00Z"
        )
    return value


class UsageLimitsSpec(BaseModel):
    """Per-task limits; a run that would exceed one fails with `usage_limit_exceeded`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_limit: _Limit | None = Field(default=50, ge=1, description="Model requests per run.")
    tool_calls_limit: _Limit | None = Field(default=None, ge=0, description="Tool calls per run.")
    input_tokens_limit: _Limit | None = Field(default=None, ge=1)
    output_tokens_limit: _Limit | None = Field(default=None, ge=1)
    total_tokens_limit: _Limit | None = Field(default=None, ge=1)


class RunAgent(BaseModel):
    """Run the named agent on a prompt. Publish to `<prefix>.tasks.run.<agent>` with
    header `Nats-Msg-Id: <task_id>`.

    The payload is one UTF-8 JSON object; only `metadata` and `usage_limits` are
    objects inside it, and they hold no further nesting. No string (metadata keys
    included) may contain a NUL character (`\\u0000`: PostgreSQL text cannot hold
    it) or a lone surrogate (`\\ud800`: not Unicode text); such tasks are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(pattern=ID_PATTERN, description="Client-chosen id; idempotency key.")
    agent: str = Field(pattern=ID_PATTERN, description="Agent name in the catalog.")
    prompt: str = Field(min_length=1, description="The user prompt.")
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Conversation to continue."
    )
    metadata: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_MAX_CHARS)],
        Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
    ] = Field(
        default_factory=dict,
        max_length=METADATA_MAX_KEYS,
        description=f"Free-form labels: at most {METADATA_MAX_KEYS} keys of 1 to"
        f" {METADATA_KEY_MAX_CHARS} characters, values of at most {METADATA_VALUE_MAX_CHARS}.",
    )
    usage_limits: UsageLimitsSpec | None = None
    deadline: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 date-time with a timezone, e.g. 2030-01-01T12:00:00Z."
        " A deadline already past when the task arrives is rejected (deadline_exceeded);"
        " a run not finished by then fails with deadline_exceeded.",
    )

    stream: bool = Field(
        default=False,
        description="Send the run's text, tool calls and end as they happen on"
        " `<prefix>.stream.<task_id>` (see the stream contract).",
    )
    stream_backpressure: Literal["none", "slow_down", "drop_oldest"] = Field(
        default="none",
        description="Flow control of the stream: `none`, `slow_down` (wait for the"
        " subscriber's acks, bounded) or `drop_oldest` (never wait; drop and count).",
    )
    stream_window: int = Field(
        default=16, ge=1, le=10_000, description="Chunks in flight without an ack."
    )
    stream_buffer: int = Field(
        default=256, ge=1, le=100_000, description="Chunks waiting to be sent, at most."
    )

    @field_validator("deadline", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        return rfc3339_deadline(value)


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


class PausedFor(BaseModel):
    """What a paused run waits for: a decision on one tool call."""

    model_config = ConfigDict(frozen=True)

    tool_call_id: str
    tool_name: str
    reason: str


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
    paused_for: PausedFor | None = None
    """Set when `status` is `paused`."""
