"""Events stored by agentledger 0.1.0 (before event versions) load in today's stores,
upcast to the current classes, fold into the views and replay `identical`."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.handlers.bootstrap import make_projector
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.queries import answer
from agentledger.handlers.replay import replay_run
from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import view_store_for
from support.replay_agents import write_replay_catalog

pytestmark = pytest.mark.asyncio

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "stored-0.1.0.json"
TASKS = ["old-calc", "old-greet", "old-boom", "old-limit", "old-n1", "old-n2"]


@pytest.mark.parametrize("cipher", [False, True], ids=["plain", "cipher"])
async def test_events_stored_by_0_1_0_load_project_and_replay(
    make_settings, backend, tmp_path: Path, cipher: bool
) -> None:  # type: ignore[no-untyped-def]
    overrides = {"catalog": str(write_replay_catalog(tmp_path))}
    if cipher:
        overrides["cipher_key"] = "L8g2nMiVbzv0gRLJjSZjuMr2lnVKwMhSnEdFPxDEhHI="
    settings = make_settings(backend, **overrides)
    raw = json.loads(FIXTURE.read_text())["events"]
    store = EventStore(settings)
    try:
        store.insert_transcoded(
            [
                (
                    UUID(e["originator_id"]),
                    e["originator_version"],
                    e["topic"],
                    json.dumps(e["state"]).encode(),
                )
                for e in raw
            ]
        )
        calc = store.get(run_id_for("old-calc"), AgentRun)
        assert calc is not None and calc.status == "completed" and calc.parent_run_id is None
        requested = store.events(run_id_for("old-n2"))[0]
        assert isinstance(requested, AgentRun.RunRequested)
        assert (requested.fork_at, requested.fork_prompt) == (None, None)

        catalog = Catalog.load(settings.catalog)
        for task_id in TASKS:
            report = await replay_run(store, run_id_for(task_id), catalog)
            assert report.identical, (task_id, report.divergence and report.divergence.diff)

        views = view_store_for(settings)
        try:
            projector = make_projector(settings, store, views)
            while projector.run_once():
                pass
            runs = {r["task_id"]: r for r in answer(views, "runs", {"limit": 50})}
            assert set(runs) == set(TASKS)
            assert runs["old-boom"]["error_kind"] == "tool_error"
            conversation = answer(views, "conversation", {"session_id": "old-session"})
            assert len(conversation["turns"]) == 2
        finally:
            views.close()
    finally:
        store.close()
