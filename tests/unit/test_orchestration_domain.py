"""Orchestration's domain pieces (issue 11, first increment): the agent message envelope
(a contract: what it accepts, its subject, the ids a child task carries) and the shared
scratchpad (event-sourced key/value with optimistic concurrency), on a real event store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentledger.domain.orchestration.messages import (
    BROADCAST,
    AgentMessage,
    MessageKind,
    child_headers,
    child_metadata,
    message_subject,
)
from agentledger.domain.orchestration.scratchpad import (
    MAX_VALUE_CHARS,
    Scratchpad,
    ScratchpadConflict,
    scratchpad_id_for,
)
from agentledger.domain.tasks import RunAgent
from agentledger.infra.event_store import ConcurrencyConflict, EventStore
from agentledger.infra.settings import Settings


def request(**changes: object) -> AgentMessage:
    values: dict[str, object] = {
        "message_id": "m-2",
        "correlation_id": "wf-1",
        "causation_id": "m-1",
        "sender": "supervisor",
        "receiver": "researcher",
        "kind": "request",
        "content": {"question": "what changed?"},
    }
    values.update(changes)
    return AgentMessage.model_validate(values)


def test_a_message_names_its_workflow_cause_and_receiver_in_its_subject() -> None:
    message = request()
    assert message.kind is MessageKind.REQUEST and message.at.tzinfo is not None
    assert message_subject("ledger", message) == "ledger.messages.wf-1.researcher"
    everyone = request(kind="broadcast", receiver=BROADCAST, message_id="m-3")
    assert message_subject("ledger", everyone) == "ledger.messages.wf-1.all"
    # A child task dispatched for the request carries both ids, in its payload and headers.
    child = RunAgent(
        task_id="wf-1:m-2", agent="researcher", prompt="go", metadata=child_metadata(message)
    )
    assert child.metadata == {"correlation_id": "wf-1", "causation_id": "m-2"}
    assert child_headers(message) == {
        "Agentledger-Correlation-Id": "wf-1",
        "Agentledger-Causation-Id": "m-2",
    }
    # Round trip as JSON (what goes over NATS); times are kept in UTC.
    local = request(at=datetime(2026, 12, 5, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    again = AgentMessage.model_validate_json(local.model_dump_json())
    assert again == local and again.at == datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"receiver": "a.b"}, "receiver"),  # would split the subject
        ({"receiver": "*"}, "receiver"),  # a wildcard
        ({"correlation_id": "wf 1"}, "correlation_id"),
        ({"sender": ""}, "sender"),
        ({"kind": "gossip"}, "kind"),
        ({"receiver": BROADCAST}, "only a broadcast"),
        ({"kind": "broadcast"}, "only a broadcast"),
        ({"causation_id": "m-2"}, "cannot cause itself"),
        ({"content": "x" * 40_000}, "at most 32,768"),
        ({"content": float("nan")}, "must be JSON"),
        ({"at": datetime(2026, 12, 5, 12, 0)}, "time zone"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_message_is_refused_saying_why(
    changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        request(**changes)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(Settings(data_dir=tmp_path, postgres_dsn=None))


def test_scratchpad_writes_are_events_and_the_pad_rebuilds_from_them(store: EventStore) -> None:
    pad = Scratchpad("wf-1")
    assert pad.id == scratchpad_id_for("wf-1")
    pad.write("plan", {"steps": ["search", "summarise"]}, writer="supervisor")
    pad.write("notes", "first draft", writer="writer")
    pad.delete("notes", writer="editor")
    store.save(pad)
    loaded = store.get(scratchpad_id_for("wf-1"), Scratchpad)
    assert loaded is not None
    assert loaded.values == {"plan": {"steps": ["search", "summarise"]}}
    assert loaded.read("plan") == ({"steps": ["search", "summarise"]}, 2)
    assert loaded.read("notes") == (None, 4) and loaded.read("never") == (None, 0)
    events = store.events(scratchpad_id_for("wf-1"))
    assert [(type(e).__name__, getattr(e, "writer", None)) for e in events] == [
        ("ScratchpadOpened", None),
        ("ValueWritten", "supervisor"),
        ("ValueWritten", "writer"),
        ("ValueDeleted", "editor"),
    ]


def test_concurrent_writers_are_resolved_by_optimistic_concurrency(store: EventStore) -> None:
    store.save(Scratchpad("wf-2"))
    first = store.get(scratchpad_id_for("wf-2"), Scratchpad)
    second = store.get(scratchpad_id_for("wf-2"), Scratchpad)
    assert first is not None and second is not None
    value, revision = first.read("count")
    first.write("count", (value or 0) + 1, writer="a", expected=revision)
    store.save(first)
    # The second writer read the same state: its save from a stale copy is refused.
    second.write("count", 1, writer="b", expected=0)
    with pytest.raises(ConcurrencyConflict):
        store.save(second)
    # Reloaded, its read-modify-write names the revision it read.
    fresh = store.get(scratchpad_id_for("wf-2"), Scratchpad)
    assert fresh is not None
    value, revision = fresh.read("count")
    with pytest.raises(ScratchpadConflict, match="another participant"):
        fresh.write("count", 99, writer="b", expected=0)
    fresh.write("count", value + 1, writer="b", expected=revision)
    store.save(fresh)
    final = store.get(scratchpad_id_for("wf-2"), Scratchpad)
    assert final is not None and final.values == {"count": 2}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("a key", 1, "scratchpad key"),
        ("", 1, "scratchpad key"),
        ("k" * 201, 1, "scratchpad key"),
        ("k", "x" * (MAX_VALUE_CHARS + 1), "at most 32,768"),
        ("k", {"x": float("inf")}, "must be JSON"),
        ("k", object(), "must be JSON"),
    ],
)
def test_bad_keys_and_values_are_refused_before_anything_is_recorded(
    key: str, value: object, problem: str
) -> None:
    pad = Scratchpad("wf-3")
    with pytest.raises(ValueError, match=problem):
        pad.write(key, value, writer="a")
    assert pad.values == {} and pad.version == 1
