"""The conversations view: per session, its turns in order, each with the pydantic-ai
messages its run added and a readable transcript of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.conversation import Conversation
from agentledger.projections.base import (
    PLAIN,
    Projection,
    ProjectionError,
    Sealer,
    ViewCursor,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    select_rows,
    upsert_sql,
    view_key,
)
from agentledger.projections.transcript import TranscriptEntry, transcript

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
        self.apply_batch((event,), cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Read the touched sessions in one SELECT, fold their events in memory, then
        write the new turns and each changed session row with one statement each."""
        groups = group_by_aggregate(events, Conversation.Event)
        if not groups:
            return
        rows = select_rows(cursor, "al_conversations", _COLUMNS, groups)
        changed: list[tuple[Any, ...]] = []
        turns: list[tuple[Any, ...]] = []
        for aggregate_id, conversation_events in groups.items():
            before = row = rows.get(aggregate_id)
            for event in conversation_events:
                row = _fold(row, aggregate_id, event, turns, self.sealer)
            if row is not None and row is not before:
                changed.append(tuple(row[c] for c in _COLUMNS))
        if turns:
            cursor.executemany(_UPSERT_TURN, turns)
        if changed:
            cursor.executemany(_UPSERT, changed)


_COLUMNS = (
    "aggregate_id",
    "session_id",
    "turns",
    "last_run_id",
    "started_at",
    "updated_at",
    "version",
)
_UPSERT = upsert_sql("al_conversations", _COLUMNS, ("session_id",))
_UPSERT_TURN = upsert_sql(
    "al_conversation_turns",
    ("session_id", "turn", "run_id", "task_id", "agent", "messages", "recorded_at"),
    ("session_id", "turn"),
)


def _fold(
    row: dict[str, Any] | None,
    aggregate_id: str,
    event: object,
    turns: list[tuple[Any, ...]],
    sealer: Sealer = PLAIN,
) -> dict[str, Any] | None:
    """The session's row after `event` (a new dict if the event changes it, else `row`);
    a recorded turn's row goes to `turns`."""
    if isinstance(event, Conversation.ConversationStarted):
        if row is not None:
            return row
        at = iso(event.timestamp)
        return {
            "aggregate_id": aggregate_id,
            "session_id": view_key(event.session_id),
            "turns": 0,
            "last_run_id": None,
            "started_at": at,
            "updated_at": at,
            "version": event.originator_version,
        }
    if not isinstance(event, Conversation.TurnRecorded):
        return row
    # Turn events do not repeat the session id: it comes from the session's row.
    if row is None:
        raise ProjectionError(
            f"turn {event.turn} of conversation {event.originator_id} arrived before"
            " the conversation started; rebuild the conversations view"
        )
    if row["version"] >= event.originator_version:
        return row
    at = iso(event.timestamp)
    turns.append(
        (
            row["session_id"],
            event.turn,
            event.run_id,
            view_key(event.task_id),
            view_key(event.agent),
            sealer.seal(dumps(event.messages)),
            at,
        )
    )
    return dict(
        row,
        turns=event.turn,
        last_run_id=event.run_id,
        updated_at=at,
        version=event.originator_version,
    )


def get_conversation(
    cursor: ViewCursor, session_id: str, sealer: Sealer = PLAIN
) -> ConversationView | None:
    """A session's turns in order, or None if the session is unknown."""
    cursor.execute(
        "SELECT started_at, updated_at, last_run_id FROM al_conversations WHERE session_id = ?",
        (view_key(session_id),),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    started_at, updated_at, last_run_id = row
    cursor.execute(
        "SELECT turn, run_id, task_id, agent, recorded_at, messages"
        " FROM al_conversation_turns WHERE session_id = ? ORDER BY turn",
        (view_key(session_id),),
    )
    turns = []
    for turn, run_id, task_id, agent, recorded_at, messages_json in cursor.fetchall():
        messages = loads(sealer.unseal(messages_json))
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
