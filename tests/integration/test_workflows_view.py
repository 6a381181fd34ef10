"""The workflows view on both real stores (PostgreSQL and SQLite), through the projector:
recorded workflows are folded, sealed with the view cipher, answered by the query API,
and a rebuilt view equals the live one; graph_runs shows the same runs waiting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Backend, MakeSettings
from eventsourcing.cipher import AESCipher

from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.handlers.bootstrap import make_projector
from agentledger.handlers.projector import Projector
from agentledger.handlers.queries import QueryError, answer
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore, view_store_for
from agentledger.projections.orchestration.workflows import WorkflowsProjection
from support.harness import table_contents
from support.sample_graphs import fan_graph, recorded
from support.workflows import completed, failing, recorded_workflow

pytestmark = pytest.mark.asyncio

MARKER = "okapi-lantern-5521"


@pytest.fixture
def settings(backend: Backend, make_settings: MakeSettings) -> Settings:
    # No broker needed: a dummy URL keeps the fixture from starting NATS.
    return make_settings(backend, nats_url="nats://127.0.0.1:1")


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[EventStore, ViewStore]]:
    store, views = EventStore(settings), view_store_for(settings)
    yield store, views
    views.close()
    store.close()


def drain(projector: Projector) -> None:
    while projector.run_once():
        pass


def workflow_tables(views: ViewStore) -> dict[str, list[object]]:
    contents = table_contents(views)
    return {t: contents[t] for t in WorkflowsProjection.tables}


async def test_workflows_are_folded_queried_and_rebuilt_alike(
    settings: Settings, stores: tuple[EventStore, ViewStore]
) -> None:
    store, views = stores
    _, done = await recorded_workflow(
        [["writer", f"draft {MARKER}"], ["critic", "look"]], failing("critic"), task_id="wf-1"
    )
    _, waiting = await recorded_workflow(
        [["writer", "a"], ["critic", "b"]],
        lambda c: completed(c) if c["agent"] == "writer" else None,
        task_id="wf-2",
    )
    _, plain, _ = await recorded(fan_graph, "fan", 3)
    for events in (done, waiting, plain):
        store.save(*events)
    projector = make_projector(settings, store, views)
    projector.batch = 4  # several batches, runs split across them
    drain(projector)
    live = workflow_tables(views)
    assert len(live["al_workflows"]) == 2 and live["al_workflow_pending"] == []

    one = answer(views, "workflow", {"task_id": "wf-1"})
    assert (one["status"], one["children_failed"], one["message_count"]) == ("completed", 1, 6)
    assert one["children"][0]["output"] == f"writer did: draft {MARKER}"
    assert answer(views, "workflow", {"run_id": one["run_id"]}) == one
    listed = answer(views, "workflows", {"status": "waiting"})
    assert [(w["task_id"], w["children_finished"]) for w in listed] == [("wf-2", 1)]
    assert {w["task_id"] for w in answer(views, "workflows", {"graph": "relay"})} == {
        "wf-1",
        "wf-2",
    }
    messages = answer(views, "workflow_messages", {"correlation_id": "wf-1"})
    expected = [m.model_dump(mode="json") for m in workflow_messages(done)]
    assert [{k: v for k, v in m.items() if k != "seq"} for m in messages] == expected
    assert answer(views, "graph_run", {"task_id": "wf-2"})["status"] == "waiting"
    with pytest.raises(QueryError, match="no workflow 'task-fan'"):
        answer(views, "workflow", {"task_id": "task-fan"})
    with pytest.raises(QueryError, match="workflow needs run_id or task_id"):
        answer(views, "workflow", {})
    with pytest.raises(QueryError, match="bad arguments for workflows: status"):
        answer(views, "workflows", {"status": "lost"})
    with pytest.raises(QueryError, match="bad arguments for workflow_messages: correlation_id"):
        answer(views, "workflow_messages", {})

    for batch in (1000, 3):
        projector.batch = batch
        projector.rebuild("workflows")
        assert workflow_tables(views) == live


async def test_the_view_is_sealed_with_the_cipher_key(
    backend: Backend, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        backend, nats_url="nats://127.0.0.1:1", cipher_key=AESCipher.create_key(32)
    )
    _, events = await recorded_workflow([["writer", f"draft {MARKER}"]], task_id="wf-s")
    store, views = EventStore(settings), view_store_for(settings)
    try:
        store.save(*events)
        drain(make_projector(settings, store, views))
        stored = workflow_tables(views)
        one = answer(views, "workflow", {"task_id": "wf-s"})
        messages = answer(views, "workflow_messages", {"correlation_id": "wf-s"})
    finally:
        views.close()
        store.close()
    assert len(stored["al_workflow_messages"]) == 4
    assert MARKER not in repr(stored)  # prompts and outputs are sealed at rest
    assert one["children"][0]["output"] == f"writer did: draft {MARKER}"
    assert messages[0]["content"] == f"draft {MARKER}"
