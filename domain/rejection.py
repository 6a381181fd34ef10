"""A rejected task message: poison input is recorded, never silently dropped."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.ids import rejection_id_for

__all__ = ["TaskRejection"]


class TaskRejection(Aggregate):
    """The record of one message that could not be accepted as a task."""

    TOPIC = "agentledger.TaskRejection"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.TaskRejection.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.TaskRejection.Created"

    class TaskRejected(Created):
        """A message was rejected; `key` is its task id, or its message id if unreadable."""

        TOPIC = "agentledger.TaskRejection.TaskRejected"
        class_version = 1
        key: str
        task_id: str | None
        agent: str | None
        subject: str
        error_kind: str
        reason: str
        payload_excerpt: str

    @staticmethod
    def create_id(key: str) -> UUID:
        return rejection_id_for(key)

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
