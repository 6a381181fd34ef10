"""Orchestration over the bus (issue 11, first increment), on real NATS and both stores:
a graph step fans out to child agent tasks with `call_agents`; any worker runs them; the
parent run waits without holding a worker slot and goes on when the last child's
outcome arrives. The dispatch, each child's outcome, the correlation and causation ids
and the request messages are recorded and published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings
from nats.aio.client import Client

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.subjects import graph_task_subject
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.agents import CATALOG, MODEL_PAUSE_ENV
from support.harness import nats_client, running_worker, stored_outcome

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

GRAPHS = """
[graphs.fanout]
ref = "support.sample_graphs:fanout_graph"
"""


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG + GRAPHS)
    return make_settings(backend, catalog=str(catalog), worker_concurrency=1)


async def start(nc: Client, settings: Settings, task_id: str, calls: list[list[str]]) -> None:
    payload = {"task_id": task_id, "graph": "fanout", "inputs": calls}
    await nc.jetstream().publish(
        graph_task_subject(settings.subject_prefix, "fanout"),
        json.dumps(payload).encode(),
        headers={"Nats-Msg-Id": task_id},
    )


async def outcome(nc: Client, settings: Settings, task_id: str, timeout: float = 60) -> Any:
    return await stored_outcome(nc, settings, task_id, timeout)


async def test_a_fan_out_runs_children_as_tasks_and_merges_their_answers(
    settings: Settings,
) -> None:
    prefix = settings.subject_prefix
    calls = [["echo", f"part {i}"] for i in range(4)] + [["nobody", "is there anyone?"]]
    async with running_worker(settings), nats_client(settings) as nc:
        requests: list[dict[str, Any]] = []

        async def on_message(msg: Any) -> None:
            requests.append({"subject": msg.subject, **json.loads(msg.data)})

        await nc.subscribe(f"{prefix}.messages.wf-1.>", cb=on_message)
        await start(nc, settings, "wf-1", calls)
        result = await outcome(nc, settings, "wf-1")
    assert result["status"] == "completed", result
    assert sorted(result["output"]["outputs"]) == [f"turn 1: part {i}" for i in range(4)]
    assert result["output"]["failed"] == 1  # the unknown agent's child was rejected

    store = EventStore(settings)
    try:
        events = store.events(graph_run_id_for("wf-1"))
        names = [type(e).__name__ for e in events]
        assert names.count("ChildrenDispatched") == 1 and names.count("ChildFinished") == 5
        dispatched = next(e for e in events if isinstance(e, GraphRun.ChildrenDispatched))
        children = dispatched.children
        assert [(c["agent"], c["prompt"]) for c in children] == [tuple(c) for c in calls]
        assert [c["task_id"] for c in children] == result["output"]["children"]
        finished = {
            e.child_task_id: e.outcome for e in events if type(e).__name__ == "ChildFinished"
        }
        assert finished[children[4]["task_id"]]["status"] == "rejected"
        for child in children[:4]:
            run = store.get(run_id_for(child["task_id"]), AgentRun)
            assert run is not None and run.status == "completed"
            requested = store.events(run.id)[0]
            assert requested.metadata == {
                "correlation_id": "wf-1",
                "causation_id": child["message_id"],
                "parent_graph_task_id": "wf-1",
            }
        # The fan-out step ran live twice (dispatch, then with the outcomes); the merge once.
        assert names.count("StepFinished") == 2
    finally:
        store.close()
    # The request messages went out on <prefix>.messages.<workflow>.<receiver>, and each
    # child's response on <prefix>.messages.<workflow>.<graph>, caused by its request.
    sent = [r for r in requests if r["kind"] == "request"]
    answers = [r for r in requests if r["kind"] == "response"]
    assert len(sent) + len(answers) == len(requests)
    assert sorted((r["subject"], r["content"]) for r in sent) == sorted(
        (f"{prefix}.messages.wf-1.{c['agent']}", c["prompt"]) for c in children
    )
    assert {r["causation_id"] for r in sent} == {None}
    assert {r["message_id"] for r in sent} == {c["message_id"] for c in children}
    by_request = {r["causation_id"]: r for r in answers}
    assert set(by_request) == {c["message_id"] for c in children}
    for c in children:
        answer = by_request[c["message_id"]]
        assert answer["subject"] == f"{prefix}.messages.wf-1.fanout"
        assert (answer["sender"], answer["receiver"]) == (c["agent"], "fanout")
        assert answer["correlation_id"] == "wf-1"
        assert answer["message_id"] == "res-" + c["message_id"].removeprefix("req-")
    assert by_request[children[0]["message_id"]]["content"] == "turn 1: part 0"
    assert by_request[children[4]["message_id"]]["content"]["error"]["kind"] == "unknown_agent"


async def test_a_waiting_parent_holds_no_worker_slot(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot per worker (worker_concurrency 1) and two workflows whose children take
    1 s each: the second workflow starts while the first one's children run (were the
    first holding its slot while it waits, the second would wait for it to end)."""
    monkeypatch.setenv(MODEL_PAUSE_ENV, "1")
    async with running_worker(settings), nats_client(settings) as nc:
        await start(nc, settings, "wf-a", [["effect", "a-0"], ["effect", "a-1"]])
        await start(nc, settings, "wf-b", [["effect", "b-0"]])
        a, b = await asyncio.gather(
            outcome(nc, settings, "wf-a", 90), outcome(nc, settings, "wf-b", 90)
        )
    assert a["status"] == b["status"] == "completed", (a, b)
    store = EventStore(settings)
    try:
        first = store.events(graph_run_id_for("wf-a"))
        second = store.events(graph_run_id_for("wf-b"))
    finally:
        store.close()
    a_done = next(e for e in first if type(e).__name__ == "GraphCompleted").timestamp
    b_dispatched = next(e for e in second if type(e).__name__ == "ChildrenDispatched").timestamp
    assert b_dispatched < a_done
