"""Replay, fork, export and import of graph runs, through the CLI, on PostgreSQL and
SQLite: replay serves every step (the decision runs again), a fork is a new linked run
from a checkpoint, and an export replays on its own after import elsewhere."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings
from typer.testing import CliRunner

from agentledger.catalog import example_graphs
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.graphs.tasks import RunGraph
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.cli import app
from agentledger.handlers.graphs.runner import GraphRunner, agent_step_task_id
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings
from support.harness import settings_env

CATALOG = """
[agents.risk_analyst]
ref = "agentledger.catalog.example_agents:risk_analyst"

[graphs.review]
ref = "agentledger.catalog.example_graphs:review"
"""
HIGH = {"customer": "acme", "amounts": [9e3, 6e3]}


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    return make_settings(backend, catalog=str(catalog))


def record(settings: Settings, task_id: str, inputs: dict[str, Any]) -> Any:
    async def go() -> Any:
        store = AsyncEventStore(EventStore(settings), 4, retry_s=0)
        try:
            catalog = Catalog.load(settings.catalog)
            agents = AgentRunner(store=store, catalog=catalog)
            runner = GraphRunner(store=store, catalog=catalog, agents=agents)
            return await runner.run(RunGraph(task_id=task_id, graph="review", inputs=inputs))
        finally:
            store.close()

    return asyncio.run(go())


def cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=settings_env(settings))


def events_of(settings: Settings, run_id: Any) -> list[Any]:
    store = EventStore(settings)
    try:
        return store.events(run_id)
    finally:
        store.close()


def test_replay_is_identical_and_a_changed_decision_diverges_at_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert record(settings, "rev-1", HIGH).output["decision"] == "escalated"

    same = cli(settings, "replay", "rev-1")
    assert same.exit_code == 0, same.output
    assert "3 of 3 recorded steps served" in same.output and "identical" in same.output
    report = json.loads(cli(settings, "replay", "rev-1", "--json").stdout)[0]
    assert (report["kind"], report["verdict"], report["served_steps"]) == ("graph", "identical", 3)
    (step,) = report["agent_steps"]  # the analysis agent's run, replayed too
    assert (step["agent"], step["verdict"]) == ("risk_analyst", "identical")

    monkeypatch.setattr(example_graphs, "HIGH_RISK", 0.99)  # the decision now approves
    changed = cli(settings, "replay", "rev-1")
    assert changed.exit_code == 2, changed.output
    branch = next(
        e
        for e in events_of(settings, graph_run_id_for("rev-1"))
        if isinstance(e, GraphRun.BranchTaken)
    )
    assert f"diverged at risk_decision (event {branch.originator_version})" in changed.output
    assert "(to approve); the record has branch 0 (to escalate)" in changed.output


def test_a_fork_from_a_checkpoint_is_a_new_linked_run(settings: Settings) -> None:
    record(settings, "rev-2", HIGH)
    parent = events_of(settings, graph_run_id_for("rev-2"))
    analysed = next(
        e for e in parent if isinstance(e, GraphRun.StepFinished) and e.node_id == "analyse"
    )
    state = {**analysed.state, "customer": "zed"}
    forked = cli(
        settings,
        "fork", "rev-2", "--at", str(analysed.originator_version),
        "--state", json.dumps(state), "--task-id", "rev-2-f", "--json",
    )  # fmt: skip
    assert forked.exit_code == 0, forked.output
    outcome = json.loads(forked.stdout)
    assert outcome["status"] == "completed" and outcome["at"] == analysed.originator_version
    assert outcome["output"]["customer"] == "zed"  # escalate ran live on the given state
    fork = events_of(settings, graph_run_id_for("rev-2-f"))
    assert fork[0].parent_run_id == str(graph_run_id_for("rev-2"))
    assert [type(e).__name__ for e in fork[1 : analysed.originator_version]] == [
        type(e).__name__ for e in parent[1 : analysed.originator_version]
    ]
    live = [
        e.node_id
        for e in fork[analysed.originator_version :]
        if isinstance(e, GraphRun.StepStarted)
    ]
    assert live == ["escalate"]  # prepare and analyse were served from the copies
    analyse_key = analysed.key
    assert not events_of(settings, run_id_for(agent_step_task_id("rev-2-f", analyse_key)))
    assert len(events_of(settings, graph_run_id_for("rev-2"))) == len(parent)  # untouched

    # At the start with another input: a new agent run, the other branch.
    again = cli(
        settings, "fork", "rev-2", "--at", "1", "--input",
        '{"customer": "bo", "amounts": [40]}', "--task-id", "rev-2-g", "--json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["output"]["decision"] == "approved"
    assert events_of(settings, run_id_for(agent_step_task_id("rev-2-g", analyse_key)))

    wrong = cli(settings, "fork", "rev-2", "--at", "2")
    assert wrong.exit_code == 1
    assert "event 2 is not a checkpoint of graph run 'rev-2'; fork at one of: 1 (start)" in (
        wrong.output
    )
    late_input = cli(
        settings, "fork", "rev-2", "--at", str(analysed.originator_version), "--input", "1"
    )
    assert late_input.exit_code == 1 and "a new input only fits a fork at 1" in late_input.output
    bad_state = cli(settings, "fork", "rev-2", "--at", "1", "--state", '{"dropped": "many"}')
    assert bad_state.exit_code == 1 and "the fork's state does not fit the graph: dropped" in (
        bad_state.output
    )


def test_an_exported_graph_run_imports_elsewhere_and_replays(
    settings: Settings, make_settings: MakeSettings, tmp_path: Path
) -> None:
    record(settings, "rev-3", HIGH)
    out = tmp_path / "rev-3.json"
    exported = cli(settings, "export", "rev-3", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    document = json.loads(out.read_text())
    assert document["subject"] == {"kind": "graph", "id": "rev-3"}
    assert [a["aggregate_type"] for a in document["aggregates"]] == ["GraphRun", "AgentRun"]
    assert document["graphs"] == {"review": "agentledger.catalog.example_graphs:review"}

    elsewhere = make_settings("sqlite", sqlite_path=tmp_path / "other.db", catalog=settings.catalog)
    assert cli(elsewhere, "import", str(out)).exit_code == 0
    assert cli(elsewhere, "import", str(out)).exit_code == 0  # idempotent
    moved = events_of(elsewhere, graph_run_id_for("rev-3"))
    assert [e.__dict__ for e in moved] == [
        e.__dict__ for e in events_of(settings, graph_run_id_for("rev-3"))
    ]
    replayed = cli(elsewhere, "replay", "--file", str(out), "--json")
    assert replayed.exit_code == 0, replayed.output
    (report,) = json.loads(replayed.stdout)
    assert (report["verdict"], report["served_steps"], len(report["agent_steps"])) == (
        "identical", 3, 1,
    )  # fmt: skip
    shown = cli(elsewhere, "events", "rev-3", "--json")
    assert json.loads(shown.stdout)[0]["name"] == "GraphStarted"
