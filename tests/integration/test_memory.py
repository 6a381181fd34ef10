"""The memory view on both real view stores (PostgreSQL + pgvector HNSW, SQLite + numpy):
nearest neighbours on a constructed set, every filter, a rebuild equal to the live view,
a changed embedder rebuilding the view, recall for an agent (and its replay without the
view), and the search over NATS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.bootstrap import load_catalog, make_memory_projector
from agentledger.handlers.client import LedgerClient
from agentledger.handlers.memory import MemoryReader
from agentledger.handlers.memory.reader import MemoryViewMismatch
from agentledger.handlers.memory.recall import MemoryRecaller
from agentledger.handlers.replay import replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.view_store import view_store_for
from support.harness import nats_client, running_projector, running_worker
from support.memory import QUERIES, TURNS, fold, record_turns


@pytest.fixture
def stores(make_settings: MakeSettings, backend: Backend) -> Any:
    settings = make_settings(backend)
    store = EventStore(settings)
    views = view_store_for(settings)
    yield settings, store, views
    views.close()
    store.close()


def test_nearest_neighbours_and_filters(stores: Any) -> None:
    settings, store, views = stores
    record_turns(store, TURNS)
    fold(settings, store, views)
    memory = MemoryReader.for_settings(settings, views)
    assert memory.stats()["texts"] == 2 * len(TURNS)
    for query, expected in QUERIES.items():
        hits = memory.search_similar(query, 3, role="user")
        assert hits[0].text == expected, (query, [h.text for h in hits])
        assert hits[0].score > hits[1].score
    # Every hit carries its score, run, session and text.
    top = memory.search_similar("the production deploy", 1)[0]
    assert top.run_id and top.task_id.startswith("turn-") and top.session_id == "s-ops"
    assert -1.0 <= top.score <= 1.0 + 1e-6
    # agent
    hits = memory.search_similar("anything at all", 20, agent="greeter")
    assert {h.agent for h in hits} == {"greeter"} and len(hits) == 4
    # session
    hits = memory.search_similar("food", 20, session="s-home", role="user")
    assert {h.text for h in hits} == {TURNS[2][2], TURNS[3][2]}
    # role
    hits = memory.search_similar("noted", 20, role="assistant")
    assert len(hits) == len(TURNS) and {h.role for h in hits} == {"assistant"}
    # other sessions only
    hits = memory.search_similar("deploy", 20, exclude_session="s-ops")
    assert "s-ops" not in {h.session_id for h in hits} and len(hits) == 8
    # time window: nothing before the first turn, everything up to now
    first = min(h.at for h in memory.search_similar("x", 100))
    assert memory.search_similar("x", 100, until=first) == []
    assert len(memory.search_similar("x", 100, since=first)) == 12
    assert memory.search_similar("x", 100, since=datetime.now(UTC) + timedelta(hours=1)) == []
    # bad input is a clear error, not a crash
    with pytest.raises(ValueError, match="non-empty"):
        memory.search_similar("   ", 3)
    with pytest.raises(ValueError, match="k must be"):
        memory.search_similar("x", 0)


def test_the_rebuilt_view_equals_the_live_one(stores: Any) -> None:
    settings, store, views = stores
    record_turns(store, TURNS[:3], tag="a")
    projector = make_memory_projector(settings, store, views)
    projector.batch = 2  # live: folded a few events at a time, as they arrive
    while projector.run_once():
        pass
    record_turns(store, TURNS[3:], tag="b")
    while projector.run_once():
        pass

    def rows() -> list[tuple[Any, ...]]:
        with views.read() as cursor:
            cursor.execute(
                "SELECT id, run_id, task_id, agent, session_id, role, at, text,"
                " embedding FROM al_memory ORDER BY id"
            )
            return cursor.fetchall()

    def indexes() -> set[str]:
        with views.read() as cursor:
            if settings.postgres_dsn:
                cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'al_memory'")
            else:
                cursor.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'al_memory'")
            return {r[0] for r in cursor.fetchall()}

    live, made = rows(), indexes()
    assert len(live) == 2 * len(TURNS)
    assert ("al_memory_hnsw" in made) == bool(settings.postgres_dsn)
    folded: list[set[str]] = []
    original = projector._advance

    def advance(projection: Any) -> Any:
        folded.append(indexes())
        return original(projection)

    projector._advance = advance  # type: ignore[method-assign]
    assert projector.rebuild("memory") > 0
    assert rows() == live
    # The HNSW index is built after the fold, not kept up row by row during it.
    assert folded and all("al_memory_hnsw" not in names for names in folded)
    assert indexes() == made


def test_another_embedder_rebuilds_the_view_and_the_view_says_which(stores: Any) -> None:
    settings, store, views = stores
    record_turns(store, TURNS)
    fold(settings, store, views)
    other = settings.model_copy(update={"embedder": "wordllama"})
    # A reader never drops a view it did not make: it says why it cannot search.
    with pytest.raises(MemoryViewMismatch, match="minilm"):
        MemoryReader.for_settings(other, views).search_similar("deploy", 1)
    fold(other, store, views)  # the projector drops and refolds it
    memory = MemoryReader.for_settings(other, views)
    stats = memory.stats()
    assert stats["embedder"] == "wordllama:l2_supercat:256" and stats["texts"] == 12
    assert memory.search_similar("deploy", 1, role="user")[0].text == TURNS[0][2]


async def test_an_agent_with_recall_sees_recalled_turns_and_replays_without_the_view(
    stores: Any,
) -> None:
    settings, store, views = stores
    record_turns(store, TURNS)
    projector = fold(settings, store, views)
    catalog = load_catalog(settings)
    recaller = MemoryRecaller(MemoryReader.for_settings(settings, views))
    runner = AgentRunner(store=AsyncEventStore(store, 2), catalog=catalog, recaller=recaller)
    outcome = await runner.run(
        RunAgent(task_id="ask-1", agent="librarian", prompt="when is the deploy to production?")
    )
    assert outcome.status == "completed"
    assert outcome.output == "I recall: the production deploy is scheduled for Friday evening"
    events = store.events(outcome.run_id and AgentRun.create_id("ask-1"))
    recalled = [e for e in events if isinstance(e, AgentRun.MemoryRecalled)]
    assert len(recalled) == 1
    hits = recalled[0].hits
    assert hits[0]["text"] == TURNS[0][2] and hits[0]["score"] >= 0.3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert recalled[0].embedder.startswith("minilm")
    # The model was given the recalled turns as instructions.
    request = next(e for e in events if isinstance(e, AgentRun.ModelRequestSent))
    assert "the production deploy is scheduled for Friday evening" in str(request.message)

    # Drop the memory view: replay serves the recorded recall, and is identical.
    views.drop(projector.projections[0])
    report = await replay_run(store, AgentRun.create_id("ask-1"), catalog)
    assert report.verdict == "identical", report
    # An agent without recall records none.
    plain = await runner.run(RunAgent(task_id="ask-2", agent="greeter", prompt="hello"))
    assert not [
        e
        for e in store.events(AgentRun.create_id("ask-2"))
        if isinstance(e, AgentRun.MemoryRecalled)
    ]
    assert plain.status == "completed"


@pytest.mark.slow
async def test_search_similar_and_recall_over_nats(
    make_settings: MakeSettings, backend: Backend
) -> None:
    settings = make_settings(backend)
    store = EventStore(settings)
    try:
        record_turns(store, TURNS)
    finally:
        store.close()
    async with (
        running_projector(settings) as service,
        running_worker(settings),
        nats_client(settings) as nc,
    ):
        client = LedgerClient(nc, prefix=settings.subject_prefix)
        for _ in range(200):
            hits = await client.search_similar("what noodles do I like?", 2, role="user")
            if hits:
                break
            await asyncio.sleep(0.05)
        assert hits[0].text == TURNS[2][2]
        assert service.memory_projector is not None
        only = await client.search_similar("pets", 5, session="s-home", agent="greeter")
        assert {h.session_id for h in only} == {"s-home"}
        from agentledger.handlers.client import QueryFailed

        with pytest.raises(QueryFailed, match="k"):
            await client.search_similar("x", 1000)
        with pytest.raises(QueryFailed, match="query"):
            await client.query("memory", query="")
        # A worker's agent with recall (the example librarian) recalls through the view.
        _, outcome = await client.run(
            RunAgent(task_id="lib-1", agent="librarian", prompt="where is my flight going?")
        )
        assert outcome.status == "completed"
        assert outcome.output == f"I recall: {TURNS[5][2]}"
