"""The conversations view and its transcripts, from real aggregates and real pydantic-ai
message dumps, over in-memory SQLite."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ImageUrl,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.test import TestModel

from agentledger.domain.conversation import Conversation
from agentledger.projections.base import ProjectionError
from agentledger.projections.conversations import ConversationsProjection, get_conversation
from agentledger.projections.transcript import TranscriptEntry, transcript


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in ConversationsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def fold(cursor: sqlite3.Cursor, events: Iterable[object]) -> None:
    projection = ConversationsProjection()
    for event in events:
        projection.apply(event, cursor)


def agent_run_messages(prompt: str) -> list[Any]:
    """The JSON messages of a real pydantic-ai run that calls one tool."""
    agent = Agent(TestModel(), system_prompt="Be brief.")

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    result = agent.run_sync(prompt)
    messages: list[Any] = ModelMessagesTypeAdapter.dump_python(result.new_messages(), mode="json")
    return messages


def test_transcript_of_a_real_run_with_a_tool() -> None:
    entries = transcript(agent_run_messages("add two numbers"))
    assert [(e.role, e.tool_name) for e in entries] == [
        ("system", None),
        ("user", None),
        ("tool-call", "add"),
        ("tool-return", "add"),
        ("assistant", None),
    ]
    assert entries[0].content == "Be brief."
    assert entries[1].content == "add two numbers"
    assert entries[2].content == '{"a": 0, "b": 0}'
    assert entries[3].content == "0"
    assert entries[4].content == '{"add":0}'


def test_transcript_of_lists_retries_and_thinking() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RetryPromptPart is deprecated, but stored ones exist
        messages: list[ModelRequest | ModelResponse] = [
            ModelRequest(
                parts=[
                    UserPromptPart(content=["look at", ImageUrl(url="https://x.test/a.png")]),
                    RetryPromptPart(
                        content=[
                            {"type": "missing", "loc": ("a",), "msg": "Field required", "input": {}}
                        ],
                        tool_name="add",
                    ),
                    RetryPromptPart(content="try again"),
                ]
            ),
            ModelResponse(
                parts=[
                    ThinkingPart(content="hmm"),
                    ToolCallPart(tool_name="add", args='{"a":1}', tool_call_id="c1"),
                    TextPart(content="done"),
                ]
            ),
            ModelRequest(
                parts=[
                    ToolReturnPart(
                        tool_name="add", content="bad", tool_call_id="c1", outcome="retried"
                    )
                ]
            ),
        ]
    dumped = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    assert transcript(dumped) == [
        TranscriptEntry(role="user", content="look at\n[image-url: https://x.test/a.png]"),
        TranscriptEntry(role="retry", content="a: Field required", tool_name="add"),
        TranscriptEntry(role="retry", content="try again"),
        TranscriptEntry(role="tool-call", content='{"a":1}', tool_name="add"),
        TranscriptEntry(role="assistant", content="done"),
        TranscriptEntry(role="retry", content="bad", tool_name="add"),
    ]


def test_transcript_skips_what_it_does_not_know() -> None:
    assert transcript([{"kind": "request", "parts": [{"part_kind": "future-kind"}]}, "junk"]) == []


def test_a_session_lists_its_turns_in_order(cursor: sqlite3.Cursor) -> None:
    conversation = Conversation(session_id="s-1")
    first, second = agent_run_messages("one"), agent_run_messages("two")
    conversation.record_turn("run-1", "t-1", "echo", first)
    conversation.record_turn("run-2", "t-2", "helper", second)
    fold(cursor, conversation.collect_events())

    view = get_conversation(cursor, "s-1")
    assert view is not None
    assert [(t.turn, t.run_id, t.task_id, t.agent) for t in view.turns] == [
        (1, "run-1", "t-1", "echo"),
        (2, "run-2", "t-2", "helper"),
    ]
    assert view.turns[0].messages == first
    assert view.turns[1].transcript[1] == TranscriptEntry(role="user", content="two")
    assert view.last_run_id == "run-2"
    assert view.messages() == first + second
    assert view.updated_at >= view.started_at
    assert view.model_dump(mode="json")["turns"][0]["messages"] == first


def test_a_started_session_without_turns(cursor: sqlite3.Cursor) -> None:
    fold(cursor, Conversation(session_id="s-2").collect_events())
    view = get_conversation(cursor, "s-2")
    assert view is not None
    assert view.turns == [] and view.last_run_id is None
    assert get_conversation(cursor, "unknown") is None


def test_applying_turns_again_changes_nothing(cursor: sqlite3.Cursor) -> None:
    conversation = Conversation(session_id="s-3")
    conversation.record_turn("run-1", "t-1", "echo", [])
    events = conversation.collect_events()
    fold(cursor, events)
    fold(cursor, events)
    view = get_conversation(cursor, "s-3")
    assert view is not None
    assert len(view.turns) == 1


def test_a_turn_before_its_session_started_is_an_error(cursor: sqlite3.Cursor) -> None:
    conversation = Conversation(session_id="s-4")
    conversation.record_turn("run-1", "t-1", "echo", [])
    _, turn = conversation.collect_events()
    with pytest.raises(ProjectionError, match="before the conversation started"):
        fold(cursor, [turn])


def test_a_batch_folds_like_one_event_at_a_time(cursor: sqlite3.Cursor) -> None:
    first = Conversation(session_id="s-1")
    second = Conversation(session_id="s-2")
    for turn in range(3):
        first.record_turn(f"run-{turn}", f"t-{turn}", "echo", [{"turn": turn}])
    second.record_turn("run-9", "t-9", "helper", [])
    events = [*first.collect_events(), *second.collect_events()]

    def rows() -> list[tuple[Any, ...]]:
        return [
            *cursor.execute("SELECT * FROM al_conversations ORDER BY session_id").fetchall(),
            *cursor.execute(
                "SELECT * FROM al_conversation_turns ORDER BY session_id, turn"
            ).fetchall(),
        ]

    fold(cursor, events)
    expected = rows()
    cursor.execute("DELETE FROM al_conversations")
    cursor.execute("DELETE FROM al_conversation_turns")

    projection = ConversationsProjection()
    projection.apply_batch(events[:3], cursor)
    projection.apply_batch(events[1:], cursor)  # overlapping: applied events are skipped
    assert rows() == expected
    projection.apply_batch(events, cursor)
    assert rows() == expected
