"""Messages between the agents of a workflow (issue 11): the envelope, a contract.

Every message exchanged in a workflow is an `AgentMessage`: who sent it, to whom, what
kind, its content, the workflow it belongs to (`correlation_id`: the workflow's task id)
and the message that caused it (`causation_id`: None for the first). A workflow records
each message as an event and publishes it on `<prefix>.messages.<workflow>.<receiver>`
(`message_subject`; a broadcast goes to the receiver token `all`). Child tasks carry the
same two ids in their metadata (`child_metadata`) and in NATS headers
(`child_headers`), so a child's run can be traced to the message that asked for it.

Names and ids are subject tokens (`ID_PATTERN`: letters, digits, `_`, `-`, `:`), so a
message subject can never be widened or split by what a sender chose.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentledger.domain.tasks import ID_PATTERN

__all__ = [
    "BROADCAST",
    "CAUSATION_HEADER",
    "CAUSATION_KEY",
    "CORRELATION_HEADER",
    "CORRELATION_KEY",
    "MAX_CONTENT_CHARS",
    "PARENT_KEY",
    "AgentMessage",
    "MessageKind",
    "child_headers",
    "child_metadata",
    "message_subject",
]

BROADCAST = "all"
"""The receiver token of a message to every participant."""
CORRELATION_HEADER = "Agentledger-Correlation-Id"
CAUSATION_HEADER = "Agentledger-Causation-Id"
CORRELATION_KEY = "correlation_id"
CAUSATION_KEY = "causation_id"
PARENT_KEY = "parent_graph_task_id"
"""Metadata of a child task: the graph task that dispatched it (its outcome is reported
there, `<prefix>.tasks.graph.child`)."""
MAX_CONTENT_CHARS = 32_768
"""A message's content, as JSON, at most this long (as a task's prompt)."""


class MessageKind(StrEnum):
    REQUEST = "request"
    """Asks the receiver to do something (a child task is dispatched for it)."""
    RESPONSE = "response"
    """Answers a request (its `causation_id` is the request's id)."""
    BROADCAST = "broadcast"
    """To every participant (`receiver` is `all`)."""
    HANDOFF = "handoff"
    """Transfers the conversation, with its history, to the receiver."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AgentMessage(BaseModel):
    """One message between the participants of a workflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str = Field(pattern=ID_PATTERN, description="Unique within the workflow.")
    correlation_id: str = Field(pattern=ID_PATTERN, description="The workflow's task id.")
    causation_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="The message that caused this one."
    )
    sender: str = Field(pattern=ID_PATTERN, description="An agent name, or `workflow`.")
    receiver: str = Field(
        pattern=ID_PATTERN, description=f"An agent name, or `{BROADCAST}` for a broadcast."
    )
    kind: MessageKind
    content: Any = Field(description="Text or JSON; at most 32,768 characters as JSON.")
    at: datetime = Field(default_factory=_utcnow, description="When it was sent (UTC).")

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: Any) -> Any:

        try:
            size = len(json.dumps(value, allow_nan=False, ensure_ascii=False))
        except (TypeError, ValueError) as e:
            raise ValueError(f"content must be JSON: {e}") from None
        if size > MAX_CONTENT_CHARS:
            raise ValueError(
                f"content is {size:,} characters as JSON; at most {MAX_CONTENT_CHARS:,}"
            )
        return value

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("at must carry a time zone")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> AgentMessage:
        if (self.kind == MessageKind.BROADCAST) != (self.receiver == BROADCAST):
            raise ValueError(f"a broadcast, and only a broadcast, goes to `{BROADCAST}`")
        if self.causation_id == self.message_id:
            raise ValueError("a message cannot cause itself")
        return self


def message_subject(prefix: str, message: AgentMessage) -> str:
    """`<prefix>.messages.<workflow>.<receiver>`."""
    return f"{prefix}.messages.{message.correlation_id}.{message.receiver}"


def child_metadata(message: AgentMessage) -> dict[str, str]:
    """What a child task dispatched for `message` carries in its metadata: the
    workflow (correlation) and the request (causation)."""
    return {CORRELATION_KEY: message.correlation_id, CAUSATION_KEY: message.message_id}


def child_headers(message: AgentMessage) -> dict[str, str]:
    """The same ids as NATS headers of the child task's message."""
    return {CORRELATION_HEADER: message.correlation_id, CAUSATION_HEADER: message.message_id}
