"""Intake: turning a raw task message into a `RunAgent`, or a clear rejection.

Every way a message can be poison (not JSON, wrong shape, unknown agent, prompt too
large, subject and payload disagreeing) becomes a `TaskRejected` with one readable
sentence, keyed by the task id when it can be read, else by the message id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agentledger.domain.errors import ErrorKind
from agentledger.domain.tasks import ID_PATTERN, RunAgent
from agentledger.handlers.catalog import Catalog, UnknownAgent

__all__ = ["RawTask", "Rejection", "parse_task"]

_ID = re.compile(ID_PATTERN)
EXCERPT_CHARS = 512


class Rejection(Exception):
    """The message cannot be accepted as a task; it is recorded and not retried."""

    def __init__(
        self,
        kind: ErrorKind,
        reason: str,
        *,
        key: str,
        task_id: str | None = None,
        agent: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.key = key
        self.task_id = task_id
        self.agent = agent


@dataclass(frozen=True, kw_only=True)
class RawTask:
    """A task message as delivered."""

    body: bytes
    subject: str
    msg_id: str | None
    """The `Nats-Msg-Id` header, if any."""
    fallback_key: str
    """Identifies the message when neither task id nor msg id is readable (stream:seq)."""

    def excerpt(self) -> str:
        text = self.body[:EXCERPT_CHARS].decode("utf-8", errors="replace")
        return text + ("…" if len(self.body) > EXCERPT_CHARS else "")


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def parse_task(raw: RawTask, *, catalog: Catalog, max_prompt_chars: int) -> RunAgent:
    """The task in the message, or `Rejection` saying exactly what is wrong."""
    key = raw.msg_id if raw.msg_id and _ID.match(raw.msg_id) else raw.fallback_key
    try:
        data: Any = json.loads(raw.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Rejection(
            ErrorKind.INVALID_JSON, f"payload is not valid JSON: {e}", key=key
        ) from None
    if not isinstance(data, dict):
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"payload must be a JSON object (RunAgent), got {type(data).__name__}",
            key=key,
        )
    task_id = data.get("task_id")
    if isinstance(task_id, str) and _ID.match(task_id):
        key = task_id
    else:
        task_id = None
    agent = data.get("agent") if isinstance(data.get("agent"), str) else None
    try:
        task = RunAgent.model_validate(data)
    except ValidationError as e:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"invalid RunAgent: {_describe(e)}",
            key=key,
            task_id=task_id,
            agent=agent,
        ) from None
    subject_agent = raw.subject.rsplit(".", 1)[-1]
    if subject_agent != task.agent:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"subject names agent {subject_agent!r} but the payload names {task.agent!r}",
            key=key,
            task_id=task.task_id,
            agent=task.agent,
        )
    if len(task.prompt) > max_prompt_chars:
        raise Rejection(
            ErrorKind.PROMPT_TOO_LARGE,
            f"prompt has {len(task.prompt)} characters; the limit is {max_prompt_chars}"
            " (AGENTLEDGER_MAX_PROMPT_CHARS)",
            key=key,
            task_id=task.task_id,
            agent=task.agent,
        )
    try:
        catalog.get(task.agent)
    except UnknownAgent as e:
        raise Rejection(
            ErrorKind.UNKNOWN_AGENT, str(e), key=key, task_id=task.task_id, agent=task.agent
        ) from None
    return task
