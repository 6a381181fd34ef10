"""The conversations view: per session, its turns in order, each with the pydantic-ai
messages its run added and a readable transcript of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from domain.conversation import Conversation
from projections.base import Projection, ProjectionError, ViewCursor, dumps, iso, loads
from projections.transcript import TranscriptEntry, transcript

__all__ = ["ConversationView", "ConversationsProjection", "TurnView", "get_conversation"]


class TurnView(BaseModel):
    """One turn: a completed run of the session."""

    model_config = ConfigDict(frozen=True)

    turn: int
    run_id: str
    task_id: str
    agent: str
    recorded_at: datetime
    messages: list[Any]
    """The messages this turn added, as pydantic-ai JSON (`ModelMessagesTypeAdapter`)."""
    transcript: list[TranscriptEntry]


class ConversationView(BaseModel):
    """A session's history as the query API returns it."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    started_at: datetime
    updated_at: datetime
    last_run_id: str | None
    turns: list[TurnView]
    """In turn order."""

    def messages(self) -> list[Any]:
        """The whole history, every turn's messages in order."""
        return [message for turn in self.turns for message in turn.messages]


class ConversationsProjection(Projection):
    """Folds `Conversation` events into `al_conversations` and `al_conversation_turns`."""

    name: ClassVar[str] = "conversations"
    tables: ClassVar[tuple[str, ...]] = ("al_conversations", "al_conversation_turns")
    ddl: ClassVar[tuple[str, ...]] = (
        """CREATE TABLE IF NOT EXISTS al_conversations (
            session_id TEXT PRIMARY KEY,
            aggregate_id TEXT NOT NULL UNIQUE,
            turns INTEGER NOT NULL,
            last_run_id TEXT,
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            version INTEGER NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS al_conversation_turns (
            session_id TEXT NOT NULL,
            turn INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            messages TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (session_id, turn)
        )""",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        if isinstance(event, Conversation.ConversationStarted):
            at = iso(event.timestamp)
            cursor.execute(
                "INSERT INTO al_conversations (session_id, aggregate_id, turns, started_at,"
                " updated_at, version) VALUES (?, ?, 0, ?, ?, ?)"
                " ON CONFLICT (session_id) DO NOTHING",
                (event.session_id, str(event.originator_id), at, at, event.originator_version),
            )
        elif isinstance(event, Conversation.TurnRecorded):
            # Turn events do not repeat the session id: find it by the aggregate id.
            cursor.execute(
                "SELECT session_id, version FROM al_conversations WHERE aggregate_id = ?",
                (str(event.originator_id),),
            )
            row = cursor.fetchone()
            if row is None:
                raise ProjectionError(
                    f"turn {event.turn} of conversation {event.originator_id} arrived before"
                    " the conversation started; rebuild the conversations view"
                )
            session_id, version = row
            if version >= event.originator_version:
                return
            at = iso(event.timestamp)
            cursor.execute(
                "INSERT INTO al_conversation_turns (session_id, turn, run_id, task_id, agent,"
                " messages, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, turn) DO UPDATE SET run_id = excluded.run_id,"
                " task_id = excluded.task_id, agent = excluded.agent,"
                " messages = excluded.messages, recorded_at = excluded.recorded_at",
                (
                    session_id,
                    event.turn,
                    event.run_id,
                    event.task_id,
                    event.agent,
                    dumps(event.messages),
                    at,
                ),
            )
            cursor.execute(
                "UPDATE al_conversations SET turns = ?, last_run_id = ?, updated_at = ?,"
                " version = ? WHERE session_id = ?",
                (event.turn, event.run_id, at, event.originator_version, session_id),
            )


def get_conversation(cursor: ViewCursor, session_id: str) -> ConversationView | None:
    """A session's turns in order, or None if the session is unknown."""
    cursor.execute(
        "SELECT started_at, updated_at, last_run_id FROM al_conversations WHERE session_id = ?",
        (session_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    started_at, updated_at, last_run_id = row
    cursor.execute(
        "SELECT turn, run_id, task_id, agent, recorded_at, messages"
        " FROM al_conversation_turns WHERE session_id = ? ORDER BY turn",
        (session_id,),
    )
    turns = []
    for turn, run_id, task_id, agent, recorded_at, messages_json in cursor.fetchall():
        messages = loads(messages_json)
        turns.append(
            TurnView(
                turn=turn,
                run_id=run_id,
                task_id=task_id,
                agent=agent,
                recorded_at=recorded_at,
                messages=messages,
                transcript=transcript(messages),
            )
        )
    return ConversationView(
        session_id=session_id,
        started_at=started_at,
        updated_at=updated_at,
        last_run_id=last_run_id,
        turns=turns,
    )
