"""Route tasks over real NATS, as a plain NATS client sends them, on both stores: the
routing decision is recorded with every score and the route's agent runs as a linked run;
a prompt that fits no route gets a clear `no_route`; a duplicate is decided once; hostile
payloads are rejected; feedback and `route fit` close the loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.ids import route_decision_id_for, run_id_for
from agentledger.domain.routing.decision import RouteDecision
from agentledger.domain.run import AgentRun
from agentledger.handlers.bootstrap import load_catalog, make_router
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.harness import cli, nats_client, running_worker, settings_env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def send(nc: Any, settings: Settings, payload: Any, msg_id: str) -> dict[str, Any]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        await nc.jetstream().publish(
            f"{settings.subject_prefix}.tasks.route",
            body,
            headers={"Nats-Msg-Id": msg_id, "Agentledger-Reply-To": inbox},
        )
        answer = await sub.next_msg(timeout=60)
    finally:
        await sub.unsubscribe()
    result: dict[str, Any] = json.loads(answer.data)
    return result


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend) -> Settings:
    return make_settings(backend)  # the example catalog: routes arithmetic, notes, greeting


async def test_a_routed_task_records_the_decision_and_runs_the_linked_agent(
    settings: Settings,
) -> None:
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await send(
            nc, settings, {"task_id": "r1", "prompt": "please multiply 6 and 7"}, "r1"
        )
        again = await send(
            nc, settings, {"task_id": "r1", "prompt": "please multiply 6 and 7"}, "r1-again"
        )
        off = await send(
            nc, settings, {"task_id": "r2", "prompt": "who painted the Mona Lisa?"}, "r2"
        )
        bad = await send(nc, settings, {"task_id": "r3", "prompt": ""}, "r3")
        hostile = await send(nc, settings, b'{"task_id": "r4", "prompt": "a\\u0000b"}', "r4")
    assert outcome["status"] == "completed", outcome
    assert outcome["route"]["name"] == "arithmetic"
    assert outcome["route"]["target"] == "calculator" and outcome["agent"] == "calculator"
    assert "42" in str(outcome["output"])
    assert set(outcome["route"]["scores"]) == {"arithmetic", "notes", "greeting"}
    assert outcome["run_id"] == str(run_id_for("r1"))
    assert again == outcome  # a redelivered / repeated task is decided and run once

    store = EventStore(settings)
    try:
        decisions = store.events(route_decision_id_for("r1"))
        run = store.get(run_id_for("r1"), AgentRun)
        off_decision = store.get(route_decision_id_for("r2"), RouteDecision)
    finally:
        store.close()
    assert len(decisions) == 1
    decided = decisions[0]
    assert isinstance(decided, RouteDecision.RouteDecided)
    assert decided.chosen == "arithmetic" and decided.method == "hybrid"
    assert decided.scores["arithmetic"] == max(decided.scores.values())
    assert set(decided.thresholds) == set(decided.scores)
    assert decided.embedder.startswith("minilm") and decided.run_id == str(run_id_for("r1"))
    assert run is not None and run.status == "completed" and run.task_id == "r1"

    assert off["status"] == "failed" and off["error"]["kind"] == "no_route", off
    assert off["route"]["name"] is None and off["run_id"] is None
    assert off_decision is not None and off_decision.chosen is None and off_decision.scores

    assert bad["status"] == "rejected" and bad["error"]["kind"] == "invalid_payload"
    assert "prompt" in bad["error"]["message"]
    assert hostile["status"] == "rejected" and "NUL" in hostile["error"]["message"]


async def test_feedback_and_fit_are_recorded_and_used(settings: Settings, tmp_path: Path) -> None:
    async with running_worker(settings), nats_client(settings) as nc:
        await send(nc, settings, {"task_id": "f1", "prompt": "good evening, friend"}, "f1")
    env = settings_env(settings)
    wrong = cli("route", "feedback", "f1", "--wrong", "notes", "--note", "a test", env=env)
    assert wrong.returncode == 0, wrong.stderr
    unknown = cli("route", "feedback", "f1", "--wrong", "nowhere", env=env)
    assert unknown.returncode == 1 and "unknown route 'nowhere'" in unknown.stderr
    labelled = tmp_path / "labelled.jsonl"
    rows = [
        ("add nine and ten", "arithmetic"),
        ("times 3 by 11", "arithmetic"),
        ("what's 5 plus 8", "arithmetic"),
        ("multiply 2 by 100", "arithmetic"),
        ("remember my locker code is 1234", "notes"),
        ("what did I ask you to remember?", "notes"),
        ("keep in mind the party is on Sunday", "notes"),
        ("note down: buy milk", "notes"),
        ("hey!", "greeting"),
        ("hello, nice to meet you", "greeting"),
        ("hiya", "greeting"),
        ("good afternoon", "greeting"),
        ("what is the tallest mountain on Earth?", None),
        ("recommend a thriller novel", None),
        ("how do I bake sourdough bread?", None),
        ("who won the 1998 world cup?", None),
    ]
    labelled.write_text("\n".join(json.dumps({"text": t, "route": r}) for t, r in rows))
    fitted = cli("route", "fit", "--labelled", str(labelled), "--json", env=env)
    assert fitted.returncode == 0, fitted.stderr
    result = json.loads(fitted.stdout)
    assert result["examples"] == len(rows) + 1  # the feedback is an example too
    assert result["recorded"] and result["fit_version"] == 2
    assert 0.0 <= result["accuracy_before"] <= 1.0 and 0.0 <= result["accuracy_after"] <= 1.0
    shown = json.loads(cli("route", "show", "--json", env=env).stdout)
    assert shown["fit"]["version"] == 2 and shown["fit"]["examples"] == len(rows) + 1
    store = EventStore(settings)
    try:
        router = make_router(settings, load_catalog(settings), store)
        decision = store.get(route_decision_id_for("f1"), RouteDecision)
    finally:
        store.close()
    assert router.fit_version == 2
    assert "good evening, friend" in router.params.examples["notes"]
    assert decision is not None and decision.feedback == [
        {"correct": False, "expected": "notes", "note": "a test"}
    ]
    tested = json.loads(cli("route", "test", "multiply 4 by 4", "--json", env=env).stdout)
    assert tested["chosen"] == "arithmetic" and tested["fit_version"] == 2
    assert tested["spelling"] is None
    typo = json.loads(cli("route", "test", "multipli 4 by 4", "--json", env=env).stdout)
    assert typo["spelling"] == "multiply 4 by 4" and typo["chosen"] == "arithmetic"


async def test_a_route_to_a_graph_starts_a_graph_run_with_the_prompt_as_input(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    from agentledger.domain.ids import graph_run_id_for

    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        """
[agents.greeter]
ref = "agentledger.catalog.example_agents:greeter"

[graphs.approval]
ref = "support.sample_graphs:approval_graph"

[routes.publishing]
graph = "approval"
description = "Drafting and publishing an announcement or blog post."
examples = ["publish a blog post about our launch", "draft an announcement for the release"]

[routes.greeting]
agent = "greeter"
description = "Greetings."
examples = ["hello", "hi there"]

[router]
fallback = "greeting"
"""
    )
    settings = make_settings(backend, catalog=str(catalog))
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await send(
            nc, settings, {"task_id": "g1", "prompt": "write up a post announcing v2"}, "g1"
        )
        joke = await send(nc, settings, {"task_id": "g2", "prompt": "tell me a joke"}, "g2")
    assert outcome["status"] == "paused", outcome  # the approval graph waits for a human
    assert outcome["route"]["name"] == "publishing" and outcome["route"]["target_kind"] == "graph"
    assert outcome["graph"] == "approval" and outcome["run_id"] == str(graph_run_id_for("g1"))
    # Off-topic goes to the fallback route, and says so.
    assert joke["status"] == "completed" and joke["route"]["name"] == "greeting"
    assert joke["route"]["fallback"] is True and joke["agent"] == "greeter"
