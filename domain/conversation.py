"""The conversation aggregate: the turns of one session, in the order they committed.

Each turn event carries the messages its run added, so a session's history is one
stream read; the aggregate state itself stays two counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from agentledger.domain.ids import session_aggregate_id_for

__all__ = ["Conversation", "conversation_messages"]


class Conversation(Aggregate):
    """A session: a sequence of agent turns sharing history."""

    TOPIC = "agentledger.Conversation"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.Conversation.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.Conversation.Created"

    class ConversationStarted(Created):
        """The first task of a session arrived."""

        TOPIC = "agentledger.Conversation.ConversationStarted"
        class_version = 1
        session_id: str

    class TurnRecorded(Event):
        """A run of this session completed; `messages` are the ones it added."""

        TOPIC = "agentledger.Conversation.TurnRecorded"
        class_version = 1
        turn: int
        run_id: str
        task_id: str
        agent: str
        messages: list[Any]

    @staticmethod
    def create_id(session_id: str) -> UUID:
        return session_aggregate_id_for(session_id)

    @event(ConversationStarted)
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.turns = 0
        self.last_run_id: str | None = None

    def record_turn(self, run_id: str, task_id: str, agent: str, messages: list[Any]) -> None:
        self._trigger_turn(
            turn=self.turns + 1, run_id=run_id, task_id=task_id, agent=agent, messages=messages
        )

    @event(TurnRecorded)
    def _trigger_turn(
        self, turn: int, run_id: str, task_id: str, agent: str, messages: list[Any]
    ) -> None:
        self.turns = turn
        self.last_run_id = run_id


def conversation_messages(events: Iterable[object], up_to_version: int | None = None) -> list[Any]:
    """The session's message history (pydantic-ai JSON) from its events, optionally only
    up to an aggregate version (so a resumed run sees the history it first saw)."""
    messages: list[Any] = []
    for domain_event in events:
        if isinstance(domain_event, Conversation.TurnRecorded):
            if up_to_version is not None and domain_event.originator_version > up_to_version:
                break
            messages.extend(domain_event.messages)
    return messages
