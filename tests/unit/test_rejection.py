"""A rejection records untrusted values: bounded, storable, ids only when valid."""

from __future__ import annotations

import json

import pytest

from agentledger.domain.ids import rejection_id_for
from agentledger.domain.rejection import (
    REJECTION_TEXT_MAX_CHARS,
    TaskRejection,
    storable_text,
    unstorable_char,
    valid_id_or_none,
)
from agentledger.infra.event_store import EventStore

HOSTILE = "bad \x00 nul \ud800 lone \udfff surrogate " + "x" * 5000


def _storable(text: str) -> bool:
    text.encode("utf-8")  # raises on a surrogate
    return "\x00" not in text and len(text) <= REJECTION_TEXT_MAX_CHARS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\ufffdb"),
        ("a\ud800b\udc00", "a\ufffdb\ufffd"),
        ("emoji 😀 stays", "emoji 😀 stays"),
        ("x" * 512, "x" * 512),
        ("x" * 513, "x" * 511 + "…"),
    ],
)
def test_storable_text(text: str, expected: str) -> None:
    assert storable_text(text) == expected
    assert storable_text(expected) == expected  # idempotent


def test_unstorable_char() -> None:
    assert unstorable_char("fine 😀 \t\x01") is None
    assert unstorable_char("a\x00b\ud800") == "\x00"
    assert unstorable_char("a\udc00") == "\udc00"


def test_valid_id_or_none() -> None:
    assert valid_id_or_none("task-1:a_b") == "task-1:a_b"
    for bad in ("a b", "a.b", "", "x" * 201, "t\x00", "t\ud800", None, 7, ["t"]):
        assert valid_id_or_none(bad) is None


def test_a_rejection_made_of_hostile_values_is_bounded_and_storable() -> None:
    rejection = TaskRejection(
        key=HOSTILE,
        task_id="not an id",
        agent="agent\ud800",
        subject="ledger.tasks.run." + HOSTILE,
        error_kind="invalid_payload",
        reason=HOSTILE,
        payload_excerpt=HOSTILE,
    )
    event = rejection.pending_events[0]
    assert isinstance(event, TaskRejection.TaskRejected)
    assert event.task_id is None and event.agent is None
    for text in (event.key, event.subject, event.reason, event.payload_excerpt):
        assert _storable(text)
    assert rejection.reason == event.reason and rejection.task_id is None
    assert rejection.id == rejection_id_for(storable_text(HOSTILE))

    store = EventStore.in_memory()
    store.save(rejection)  # the store encodes events as UTF-8 JSON
    (stored,) = store.events(rejection.id)
    assert stored.reason == event.reason
    json.dumps(stored.__dict__, default=str).encode("utf-8")


def test_valid_values_are_recorded_unchanged() -> None:
    rejection = TaskRejection(
        key="t-1",
        task_id="t-1",
        agent="greeter",
        subject="ledger.tasks.run.greeter",
        error_kind="unknown_agent",
        reason="unknown agent 'greeter'; the catalog has: calculator",
        payload_excerpt='{"task_id": "t-1"}',
    )
    event = rejection.pending_events[0]
    assert isinstance(event, TaskRejection.TaskRejected)
    assert (event.key, event.task_id, event.agent) == ("t-1", "t-1", "greeter")
    assert event.reason == "unknown agent 'greeter'; the catalog has: calculator"
    assert rejection.id == rejection_id_for("t-1")
