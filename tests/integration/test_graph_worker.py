"""Graph tasks over NATS, as a plain NATS client sends them: the example graph's two
branches, pause and resume across a worker restart, a duplicated resume, cancel, and
hostile messages that each get one clear rejection while the worker goes on.
Real nats-server and both stores."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings
from nats.aio.client import Client

from agentledger.handlers.client import query_over_nats
from agentledger.infra.settings import Settings
from support.harness import nats_client, running_projector, running_worker, settings_env

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

AGENTLEDGER = str(Path(sys.executable).with_name("agentledger"))

CATALOG = """
[agents.risk_analyst]
ref = "agentledger.catalog.example_agents:risk_analyst"

[graphs.review]
ref = "agentledger.catalog.example_graphs:review"

[graphs.approval]
ref = "support.sample_graphs:approval_graph"
"""


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    return make_settings(backend, catalog=str(catalog))


async def send(
    nc: Client, subject: str, payload: Any, msg_id: str, timeout: float = 30
) -> dict[str, Any]:
    """Publish like any NATS client (JetStream, a message id, a reply header) and wait
    for the answer."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        await nc.jetstream().publish(
            subject, body, headers={"Nats-Msg-Id": msg_id, "Agentledger-Reply-To": inbox}
        )
        answer = await sub.next_msg(timeout=timeout)
    finally:
        await sub.unsubscribe()
    result: dict[str, Any] = json.loads(answer.data)
    return result


async def stored_outcome(nc: Client, prefix: str, task_id: str) -> dict[str, Any]:
    msg = await nc.jetstream().get_last_msg(
        f"{prefix.upper()}_RESULTS", f"{prefix}.results.{task_id}"
    )
    result: dict[str, Any] = json.loads(msg.data)
    return result


async def test_the_review_graph_takes_each_branch(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        high, normal = await asyncio.gather(
            send(
                nc,
                f"{prefix}.tasks.graph.review",
                {
                    "task_id": "r-high",
                    "graph": "review",
                    "inputs": {"customer": "acme", "amounts": [9000, 6000]},
                },
                "r-high",
            ),
            send(
                nc,
                f"{prefix}.tasks.graph.review",
                {
                    "task_id": "r-normal",
                    "graph": "review",
                    "inputs": {"customer": "bo", "amounts": [40, 2]},
                },
                "r-normal",
            ),
        )
        assert (high["status"], high["output"]["decision"]) == ("completed", "escalated")
        assert (normal["status"], normal["output"]["decision"]) == ("completed", "approved")
        assert await stored_outcome(nc, prefix, "r-high") == high


async def test_graph_events_go_out_on_nats_and_the_view_answers_over_nats(
    settings: Settings,
) -> None:
    prefix = settings.subject_prefix
    relayed: list[str] = []

    async def on_event(msg: Any) -> None:
        relayed.append(msg.subject.removeprefix(f"{prefix}.events.GraphRun."))

    async with running_worker(settings), nats_client(settings) as nc:
        await nc.subscribe(f"{prefix}.events.GraphRun.>", cb=on_event)
        payload = {
            "task_id": "ev-1",
            "graph": "review",
            "inputs": {"customer": "a", "amounts": [1]},
        }
        done = await send(nc, f"{prefix}.tasks.graph.review", payload, "ev-1")
        async with running_projector(settings) as projector:
            assert projector.store is not None
            last = projector.store.max_notification_id()
            assert await asyncio.to_thread(projector.wait_until, last, 30)
            for _ in range(200):
                if "GraphCompleted" in relayed:
                    break
                await asyncio.sleep(0.05)
            view = await query_over_nats(nc, prefix, "graph_run", {"task_id": "ev-1"})
    assert relayed[0] == "GraphStarted" and relayed[-1] == "GraphCompleted"
    assert relayed.count("StepFinished") == 3 and "BranchTaken" in relayed
    assert (view["status"], view["output"]) == ("completed", done["output"])
    assert view["path"] == ["prepare", "analyse", "approve"]


async def test_a_paused_graph_is_resumed_by_a_new_worker_once(settings: Settings) -> None:
    prefix = settings.subject_prefix
    start = {"task_id": "ask-1", "graph": "approval", "inputs": "the plan"}
    async with running_worker(settings), nats_client(settings) as nc:
        paused = await send(nc, f"{prefix}.tasks.graph.approval", start, "ask-1")
    assert paused["status"] == "paused"
    assert paused["waiting_for"]["node"] == "approve"
    # The first worker is gone; a new one takes the resume.
    async with running_worker(settings), nats_client(settings) as nc:
        resume = {"task_id": "ask-1", "resume_id": "go-1", "input": "yes"}
        done = await send(nc, f"{prefix}.tasks.graph.resume", resume, "go-1")
        assert (done["status"], done["output"]) == (
            "completed",
            "published (draft of the plan: yes)",
        )
        # The same resume under another message id: applied once, same outcome.
        again = await send(nc, f"{prefix}.tasks.graph.resume", resume, "go-1-again")
        assert again == done
        # A resume for a finished run is rejected, on the reply subject only.
        late = {"task_id": "ask-1", "input": "no"}
        refused = await send(nc, f"{prefix}.tasks.graph.resume", late, "go-2")
        assert refused["status"] == "rejected" and refused["error"]["kind"] == "run_finished"
        assert (await stored_outcome(nc, prefix, "ask-1"))["status"] == "completed"


async def test_cancel_ends_a_paused_run(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        start = {"task_id": "ask-2", "graph": "approval", "inputs": "x"}
        await send(nc, f"{prefix}.tasks.graph.approval", start, "ask-2")
        cancelled = await send(
            nc, f"{prefix}.tasks.graph.cancel", {"task_id": "ask-2", "reason": "no longer"}, "c-1"
        )
        assert cancelled["status"] == "failed"
        assert cancelled["error"] == {
            "kind": "cancelled",
            "message": "no longer",
            "retryable": False,
        }
        assert (await stored_outcome(nc, prefix, "ask-2"))["status"] == "failed"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_hostile_graph_messages_are_rejected_and_the_worker_goes_on(
    settings: Settings,
) -> None:
    prefix = settings.subject_prefix
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    cases = [
        (f"{prefix}.tasks.graph.review", b"{not json", "invalid_json"),
        (
            f"{prefix}.tasks.graph.review",
            {"task_id": "h-2", "graph": "review", "inputs": deep},
            "invalid_payload",
        ),
        (
            f"{prefix}.tasks.graph.review",
            {
                "task_id": "h-3",
                "graph": "review",
                "inputs": {"customer": "a\u0000b", "amounts": []},
            },
            "invalid_payload",
        ),
        (
            f"{prefix}.tasks.graph.review",
            {"task_id": "h-4", "graph": "approval", "inputs": "x"},
            "invalid_payload",
        ),
        (f"{prefix}.tasks.graph.nope", {"task_id": "h-5", "graph": "nope"}, "unknown_graph"),
        (
            f"{prefix}.tasks.graph.review",
            {"task_id": "h-6", "graph": "review", "inputs": {}},
            "invalid_payload",
        ),
        (
            f"{prefix}.tasks.graph.review",
            {"task_id": "h-7", "graph": "review", "inputs": None, "max_steps": "5"},
            "invalid_payload",
        ),
        (f"{prefix}.tasks.graph.resume", {"task_id": "nobody", "input": 1}, "unknown_run"),
        (f"{prefix}.tasks.graph.cancel", {"task_id": "nobody"}, "unknown_run"),
    ]
    async with running_worker(settings), nats_client(settings) as nc:
        for i, (subject, payload, kind) in enumerate(cases):
            answer = await send(nc, subject, payload, f"hostile-{i}")
            assert (answer["status"], answer["error"]["kind"]) == ("rejected", kind), answer
        canary = await send(
            nc,
            f"{prefix}.tasks.graph.review",
            {"task_id": "canary", "graph": "review", "inputs": {"customer": "c", "amounts": [1]}},
            "canary",
        )
        assert canary["status"] == "completed"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_cli_publishes_resumes_and_cancels_graph_tasks(settings: Settings) -> None:
    env = settings_env(settings)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [AGENTLEDGER, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    async with running_worker(settings), running_projector(settings):
        review = await cli(
            "publish-graph",
            "review",
            '{"customer": "acme", "amounts": [9000, 6000]}',
            "--task-id",
            "cli-1",
            "--json",
        )
        assert review.returncode == 0, review.stderr
        assert json.loads(review.stdout)["output"]["decision"] == "escalated"
        paused = await cli("graph", "publish", "approval", '"memo"', "--task-id", "cli-2")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        resumed = await cli("graph", "resume", "cli-2", '"fine"', "--json")
        assert json.loads(resumed.stdout)["output"] == "published (draft of memo: fine)"
        gone = await cli("graph", "cancel", "cli-2", "--json")
        assert gone.returncode == 2
        assert json.loads(gone.stdout)["error"]["kind"] == "run_finished"
        bad = await cli("publish-graph", "review", "{not json")
        assert bad.returncode == 1 and bad.stderr.startswith("error: invalid INPUTS: not JSON")

        # The read side: the graph_runs view, once the projector has folded the runs.
        for _ in range(100):
            shown = await cli("graph", "run", "cli-1", "--json")
            if shown.returncode == 0 and json.loads(shown.stdout)["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        view = json.loads(shown.stdout)
        assert view["path"] == ["prepare", "analyse", "escalate"]
        assert view["branches"] == {"risk_decision": "escalate"}
        assert [s["node_id"] for s in view["step_runs"]] == ["prepare", "analyse", "escalate"]
        listed = await cli("graph", "runs", "--graph", "review", "--json")
        assert [r["task_id"] for r in json.loads(listed.stdout)] == ["cli-1"]
        drawn = await cli("graph", "run", "cli-1", "--mermaid")
        assert drawn.returncode == 0, drawn.stderr
        assert "class escalate visited" in drawn.stdout
        assert "class approve visited" not in drawn.stdout
        missing = await cli("graph", "run", "nobody")
        assert missing.returncode == 1 and "no graph run 'nobody'" in missing.stderr
