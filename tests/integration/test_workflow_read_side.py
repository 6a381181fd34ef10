"""The read side of a workflow run over real NATS, on both stores: the fan-out graph
dispatches child tasks that workers run; the query responder answers `workflow`,
`workflows` and `workflow_messages` from the view (waiting while the children run,
running, then completed), and `agentledger workflow show|messages|list` print it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.handlers.client import QueryFailed, query_over_nats
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.agents import CATALOG, MODEL_PAUSE_ENV
from support.harness import cli, nats_client, running_projector, running_worker, settings_env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

GRAPHS = """
[graphs.fanout]
ref = "support.sample_graphs:fanout_graph"
"""
CALLS = [["effect", "one"], ["effect", "two"], ["echo", "three"], ["nobody", "four"]]


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG + GRAPHS)
    return make_settings(backend, catalog=str(catalog), worker_concurrency=1)


async def until(ask: Any, done: Any, timeout: float = 60) -> Any:
    """`await ask()` until `done(answer)`; a query's error counts as not done yet."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await ask()
        except QueryFailed as e:
            last = e
        else:
            if done(last):
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last answer: {last!r}")


async def test_a_workflow_is_read_back_over_nats_and_from_the_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_PAUSE_ENV, "0.5")  # children take a while: the run waits
    prefix = settings.subject_prefix
    async with (
        running_worker(settings),
        running_projector(settings),
        nats_client(settings) as nc,
    ):

        async def ask(view: str, **arguments: Any) -> Any:
            return await query_over_nats(nc, prefix, view, arguments)

        await nc.jetstream().publish(
            f"{prefix}.tasks.graph.fanout",
            json.dumps({"task_id": "wf-r", "graph": "fanout", "inputs": CALLS}).encode(),
            headers={"Nats-Msg-Id": "wf-r"},
        )
        waiting = await until(
            lambda: ask("workflow", task_id="wf-r"), lambda w: w["status"] == "waiting"
        )
        assert waiting["children_dispatched"] == 4
        assert waiting["children_finished"] < 4
        assert (await ask("graph_run", task_id="wf-r"))["status"] in ("waiting", "running")
        done = await until(
            lambda: ask("workflow", task_id="wf-r"), lambda w: w["status"] == "completed"
        )
        messages = await ask("workflow_messages", correlation_id="wf-r")
        listed = await ask("workflows", graph="fanout")
        assert (await ask("graph_run", task_id="wf-r"))["status"] == "completed"

    assert (done["children_finished"], done["children_failed"], done["message_count"]) == (4, 1, 8)
    children = done["children"]
    assert [(c["agent"], c["status"]) for c in children] == [
        ("effect", "completed"),
        ("effect", "completed"),
        ("echo", "completed"),
        ("nobody", "rejected"),
    ]
    assert children[3]["error"]["kind"] == "unknown_agent"
    assert [w["task_id"] for w in listed] == ["wf-r"]
    store = EventStore(settings)
    try:
        events = store.events(graph_run_id_for("wf-r"))
    finally:
        store.close()
    expected = [m.model_dump(mode="json") for m in workflow_messages(events)]
    assert [{k: v for k, v in m.items() if k != "seq"} for m in messages] == expected

    # The CLI, as a user runs it (another process, settings from the environment).
    env = settings_env(settings)
    shown = await asyncio.to_thread(cli, "workflow", "show", "wf-r", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert {k: v for k, v in document["workflow"].items()} == {
        k: v for k, v in done.items() if k != "children"
    }
    assert document["children"] == children
    assert document["messages"] == expected
    mermaid = document["mermaid"].splitlines()
    assert mermaid[:3] == [
        "sequenceDiagram",
        "    title wf-r (fanout)",
        "    participant p1 as fanout",
    ]
    assert sum("->>" in line and "-->>" not in line for line in mermaid) == 4
    assert sum("-->>" in line for line in mermaid) == 4

    text = await asyncio.to_thread(cli, "workflow", "show", done["run_id"], env=env)
    assert text.returncode == 0, text.stderr
    assert "step fan_out" in text.stdout and children[3]["child_task_id"] in text.stdout
    assert "rejected" in text.stdout and text.stdout.rstrip().endswith(mermaid[-1])

    listed_json = await asyncio.to_thread(cli, "workflow", "messages", "wf-r", "--json", env=env)
    assert json.loads(listed_json.stdout) == expected
    table = await asyncio.to_thread(cli, "workflow", "messages", "wf-r", env=env)
    assert table.returncode == 0 and "fanout -> nobody" in table.stdout
    assert "Messages of workflow wf-r (8)" in table.stdout

    runs = await asyncio.to_thread(cli, "workflow", "list", "--json", env=env)
    assert [w["task_id"] for w in json.loads(runs.stdout)] == ["wf-r"]
    runs_table = await asyncio.to_thread(cli, "workflow", "list", "--status", "completed", env=env)
    assert runs_table.returncode == 0 and "4/4 ended, 1 not completed" in runs_table.stdout

    for args, error in (
        (("show", "nobody"), "error: no workflow 'nobody' (tried it as"),
        (("messages", "nobody"), "error: no workflow 'nobody' (tried it as"),
        (("list", "--status", "lost"), "error: bad arguments for workflows: status"),
    ):
        failed = await asyncio.to_thread(cli, "workflow", *args, env=env)
        assert failed.returncode == 1, failed
        assert failed.stderr.startswith(error) and failed.stderr.count("\n") == 1, failed.stderr
