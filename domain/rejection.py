"""A rejected task message: poison input is recorded, never silently dropped.

Everything a rejection holds comes from a message that was refused, so none of it is
trusted: ids are kept only when they are valid ids, and text is bounded and freed of
what a store or a JSON encoder cannot take (NUL characters, lone surrogates), so the
record can always be saved, projected and answered.
"""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.ids import rejection_id_for
from agentledger.domain.tasks import ID_PATTERN

__all__ = [
    "REJECTION_TEXT_MAX_CHARS",
    "TaskRejection",
    "storable_text",
    "unstorable_char",
    "valid_id_or_none",
]

REJECTION_TEXT_MAX_CHARS = 512
"""The most characters a rejection keeps of any text (reason, excerpt, subject, key)."""

_ID = re.compile(ID_PATTERN)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text cannot hold it) and surrogates (UTF-8 cannot encode them)."""


def unstorable_char(text: str) -> str | None:
    """The first NUL or surrogate in `text`, if any (in text parsed from JSON, any
    surrogate left is a lone one: a valid pair becomes one character)."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.group()


def storable_text(text: str, limit: int = REJECTION_TEXT_MAX_CHARS) -> str:
    """`text` with NULs and surrogates replaced by U+FFFD, cut to `limit` characters
    (the last one an ellipsis when cut). Idempotent."""
    clean = _UNSTORABLE.sub("\ufffd", text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def valid_id_or_none(value: object) -> str | None:
    """`value` if it is a valid task, session or agent id (`ID_PATTERN`), else None."""
    return value if isinstance(value, str) and _ID.match(value) else None


class TaskRejection(Aggregate):
    """The record of one message that could not be accepted as a task."""

    TOPIC = "agentledger.TaskRejection"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.TaskRejection.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.TaskRejection.Created"

    class TaskRejected(Created):
        """A message was rejected; `key` is its task id, or its message id if unreadable.

        Made storable when created (`storable_text`, `valid_id_or_none`), whoever
        creates it."""

        TOPIC = "agentledger.TaskRejection.TaskRejected"
        class_version = 1
        key: str
        task_id: str | None
        agent: str | None
        subject: str
        error_kind: str
        reason: str
        payload_excerpt: str

        def __post_init__(self) -> None:
            super().__post_init__()
            for name in ("key", "subject", "error_kind", "reason", "payload_excerpt"):
                object.__setattr__(self, name, storable_text(getattr(self, name)))
            for name in ("task_id", "agent"):
                object.__setattr__(self, name, valid_id_or_none(getattr(self, name)))

    @staticmethod
    def create_id(key: str) -> UUID:
        return rejection_id_for(storable_text(key))

    @event(TaskRejected)
    def __init__(
        self,
        key: str,
        task_id: str | None,
        agent: str | None,
        subject: str,
        error_kind: str,
        reason: str,
        payload_excerpt: str,
    ) -> None:
        self.key = key
        self.task_id = task_id
        self.agent = agent
        self.error_kind = error_kind
        self.reason = reason
