"""The event store adapter (SQLite here; PostgreSQL in the integration tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentledger.domain.conversation import Conversation
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict, EventStore
from agentledger.infra.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(Settings(data_dir=tmp_path, postgres_dsn=None))


def test_long_sessions_are_snapshotted_so_loading_stays_short(store: EventStore) -> None:
    conversation = Conversation(session_id="long")
    store.save(conversation)
    for i in range(120):
        loaded = store.get(conversation.id, Conversation)
        assert loaded is not None
        loaded.record_turn(f"r{i}", f"t{i}", "a", [{"turn": i}])
        asyncio.run(AsyncEventStore(store, threads=1).save(loaded))
    snapshots = list(store._app.snapshots.get(conversation.id))  # type: ignore[union-attr]
    assert [s.originator_version for s in snapshots] == [50, 100]
    latest = store.get(conversation.id, Conversation)
    assert latest is not None and (latest.turns, latest.version) == (120, 121)
    at_60 = store.get(conversation.id, Conversation, version=60)
    assert at_60 is not None and at_60.turns == 59


def test_stale_writer_gets_a_concurrency_conflict(store: EventStore) -> None:
    conversation = Conversation(session_id="race")
    store.save(conversation)
    first = store.get(conversation.id, Conversation)
    second = store.get(conversation.id, Conversation)
    assert first is not None and second is not None
    first.record_turn("r1", "t1", "a", [])
    second.record_turn("r2", "t2", "a", [])
    store.save(first)
    with pytest.raises(ConcurrencyConflict):
        store.save(second)
