"""The orchestration patterns of the example catalog (`[workflows.*]`), each started by
publishing one RunGraph task over real NATS and run by a real worker on both stores.
Each test asserts the recorded message flow (requests and responses, their correlation
and causation ids), the child runs' links to the workflow, and the result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend, MakeSettings
from nats.aio.client import Client

import agentledger.catalog
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.domain.orchestration.messages import AgentMessage
from agentledger.domain.run import AgentRun
from agentledger.domain.subjects import (
    graph_task_subject,
    workflow_cancel_subject,
)
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.agents import CATALOG, JOURNAL_ENV, MODEL_PAUSE_ENV
from support.harness import nats_client, running_worker, stored_outcome

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

EXAMPLE = Path(agentledger.catalog.__file__).parent / "example.toml"
TEAM = EXAMPLE.read_text().split("# Workflows:", 1)[1].split("\n", 1)[1]
"""The example catalog's workflow section: its agents and [workflows.*]."""

EXTRA = """
[workflows.slow_fan]
pattern = "parallel"
agents = ["effect", "effect", "effect"]
policy = "best_effort"

[workflows.bad_etl]
pattern = "pipeline"
stages = [
  { agent = "extractor", output = "agentledger.catalog.example_team:Extracted" },
  { agent = "drafter", output = "agentledger.catalog.example_team:Normalised" },
]

[workflows.hasty]
pattern = "parallel"
agents = ["effect", "echo"]
step_timeout_s = 0.5

[workflows.strict_fan]
pattern = "parallel"
agents = ["echo", "exploding", "effect"]
policy = "fail_fast"
"""


@pytest.fixture
def settings(make_settings: MakeSettings, backend: Backend, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG + TEAM + EXTRA)
    return make_settings(backend, catalog=str(catalog))


async def start(nc: Client, settings: Settings, graph: str, task_id: str, inputs: Any) -> None:
    payload = {"task_id": task_id, "graph": graph, "inputs": inputs}
    ack = await nc.jetstream().publish(
        graph_task_subject(settings.subject_prefix, graph),
        json.dumps(payload).encode(),
        headers={"Nats-Msg-Id": task_id},
    )
    assert not ack.duplicate


async def outcome(nc: Client, settings: Settings, task_id: str, timeout: float = 60) -> Any:
    return await stored_outcome(nc, settings, task_id, timeout)


async def run_workflow(
    settings: Settings, graph: str, task_id: str, inputs: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start it, wait for its outcome; also what was published on its message subjects."""
    async with running_worker(settings), nats_client(settings) as nc:
        seen: list[dict[str, Any]] = []

        async def on_message(msg: Any) -> None:
            seen.append({"subject": msg.subject, **json.loads(msg.data)})

        await nc.subscribe(f"{settings.subject_prefix}.messages.{task_id}.>", cb=on_message)
        await start(nc, settings, graph, task_id, inputs)
        result = await outcome(nc, settings, task_id)
        await nc.flush()
    return result, seen


def recorded(settings: Settings, task_id: str) -> tuple[list[Any], list[AgentMessage]]:
    store = EventStore(settings)
    try:
        events = store.events(graph_run_id_for(task_id))
    finally:
        store.close()
    return events, workflow_messages(events)


def child_runs(settings: Settings, events: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    """(dispatched child, its run's first event) for every child, in dispatch order."""
    store = EventStore(settings)
    try:
        out = []
        for e in events:
            if isinstance(e, GraphRun.ChildrenDispatched):
                for child in e.children:
                    out.append((child, store.events(run_id_for(child["task_id"]))[0]))
        return out
    finally:
        store.close()


def assert_linked(task_id: str, messages: list[AgentMessage], children: list[Any]) -> None:
    """Every message belongs to the workflow; every response answers a request of it;
    every child run carries the workflow and the request that caused it."""
    assert {m.correlation_id for m in messages} == {task_id}
    requests = {m.message_id: m for m in messages if m.kind != "response"}
    responses = [m for m in messages if m.kind == "response"]
    assert len(responses) == len([c for c in children])
    for response in responses:
        request = requests[response.causation_id]  # type: ignore[index]
        assert response.receiver == request.sender
        if request.kind != "broadcast":  # a broadcast goes to `all`, each answers
            assert response.sender == request.receiver
    for child, requested in children:
        assert requested.metadata["correlation_id"] == task_id
        assert requested.metadata["causation_id"] == child.get("broadcast_id", child["message_id"])
        assert requested.metadata["parent_graph_task_id"] == task_id


def flow(messages: list[AgentMessage]) -> list[tuple[str, str, str]]:
    return [(m.kind.value, m.sender, m.receiver) for m in messages]


async def test_sequential_each_agent_gets_the_previous_output(settings: Settings) -> None:
    result, seen = await run_workflow(settings, "write_up", "seq-1", "a note on tides")
    assert result["status"] == "completed", result
    assert result["output"] == "Edited: A note on tides."
    events, messages = recorded(settings, "seq-1")
    assert flow(messages) == [
        ("request", "write_up", "drafter"),
        ("response", "drafter", "write_up"),
        ("request", "write_up", "editor"),
        ("response", "editor", "write_up"),
    ]
    assert messages[2].content == "Draft: a note on tides"  # the previous output
    assert_linked("seq-1", messages, child_runs(settings, events))
    # What was recorded is what was published, on <prefix>.messages.<workflow>.<receiver>.
    assert sorted(m["message_id"] for m in seen) == sorted(m.message_id for m in messages)
    for m in seen:
        assert m["subject"] == f"{settings.subject_prefix}.messages.seq-1.{m['receiver']}"


async def test_parallel_fans_out_and_a_merger_agent_merges(settings: Settings) -> None:
    result, _ = await run_workflow(settings, "opinions", "par-1", "a four-day week")
    assert result["status"] == "completed", result
    assert result["output"] == (
        "3 views. optimist: a four-day week: a great opportunity. | realist: a four-day"
        " week: worth a small pilot first. | skeptic: a four-day week: the risks are"
        " underestimated."
    )
    events, messages = recorded(settings, "par-1")
    kinds = flow(messages)
    assert kinds[0] == ("broadcast", "opinions", "all")  # one message to the three
    assert sorted(kinds[1:4]) == [
        ("response", a, "opinions") for a in ("optimist", "realist", "skeptic")
    ]
    assert {m.causation_id for m in messages[1:4]} == {messages[0].message_id}
    assert kinds[-2:] == [
        ("request", "opinions", "moderator"),
        ("response", "moderator", "opinions"),
    ]
    dispatches = [e for e in events if isinstance(e, GraphRun.ChildrenDispatched)]
    assert [len(d.children) for d in dispatches] == [3, 1]
    assert all(c.get("deadline") for d in dispatches for c in d.children)  # step_timeout_s
    fan_out = next(
        e for e in events if isinstance(e, GraphRun.StepFinished) and e.node_id == "fan_out"
    )
    assert fan_out.output["policy"] == "best_effort" and fan_out.output["failed"] == []
    assert_linked("par-1", messages, child_runs(settings, events))


async def test_best_effort_lists_the_failures_and_fail_fast_fails_the_step(
    settings: Settings,
) -> None:
    async with running_worker(settings), nats_client(settings) as nc:
        await start(nc, settings, "strict_fan", "ff-1", "go")
        strict = await outcome(nc, settings, "ff-1")
    assert strict["status"] == "failed", strict
    assert strict["error"]["kind"] == "step_error"
    assert "exploding" in strict["error"]["message"]
    assert "child task(s) failed" in strict["error"]["message"]
    events, _ = recorded(settings, "ff-1")
    dispatched = next(e for e in events if isinstance(e, GraphRun.ChildrenDispatched))
    assert all(c["fail_fast"] for c in dispatched.children)


async def test_a_supervisor_delegates_until_it_answers(settings: Settings) -> None:
    result, _ = await run_workflow(settings, "report", "sup-1", "tides")
    assert result["status"] == "completed", result
    assert result["output"] == "Report: 3 facts about tides"
    events, messages = recorded(settings, "sup-1")
    assert flow(messages) == [
        ("request", "report", "manager"),
        ("response", "manager", "report"),
        ("request", "report", "researcher"),
        ("response", "researcher", "report"),
        ("request", "report", "manager"),
        ("response", "manager", "report"),
        ("request", "report", "writer"),
        ("response", "writer", "report"),
        ("request", "report", "manager"),
        ("response", "manager", "report"),
    ]
    assert messages[1].content == {"worker": "researcher", "instruction": "find facts on: tides"}
    children = child_runs(settings, events)
    # The supervisor's turns share one conversation (its session); workers have none.
    sessions = {c["agent"]: c.get("session_id") for c, _ in children}
    manager_sessions = {c.get("session_id") for c, _ in children if c["agent"] == "manager"}
    assert len(manager_sessions) == 1 and None not in manager_sessions
    assert sessions["researcher"] is None and sessions["writer"] is None
    assert_linked("sup-1", messages, children)


async def test_a_supervisor_that_never_answers_stops_at_its_round_bound(
    settings: Settings,
) -> None:
    result, _ = await run_workflow(settings, "endless", "sup-2", "anything")
    assert result["status"] == "failed", result
    assert result["error"]["kind"] == "step_limit_exceeded"
    assert result["error"]["message"] == (
        "supervisor 'stubborn_manager' did not give a final answer within 3 rounds (3 delegations)"
    )
    _, messages = recorded(settings, "sup-2")
    asked = [m for m in messages if m.kind == "request" and m.receiver == "stubborn_manager"]
    assert len(asked) == 3


async def test_a_pipeline_validates_each_stage_and_passes_typed_outputs(
    settings: Settings,
) -> None:
    result, _ = await run_workflow(
        settings, "names_etl", "etl-1", "meet alice and bob, then Alice again"
    )
    assert result["status"] == "completed", result
    assert result["output"] == {"count": 2, "names": ["Alice", "Bob"]}
    events, messages = recorded(settings, "etl-1")
    assert [m.receiver for m in messages if m.kind == "request"] == [
        "extractor",
        "normaliser",
        "loader",
    ]
    # The second stage got the first stage's validated output as JSON.
    second = [m for m in messages if m.kind == "request"][1]
    assert json.loads(second.content) == {"names": ["alice", "bob", "Alice"]}
    assert_linked("etl-1", messages, child_runs(settings, events))
    # A stage whose output does not fit its type fails the run, naming the stage.
    bad, _ = await run_workflow(settings, "bad_etl", "etl-2", "alice")
    assert bad["status"] == "failed", bad
    assert bad["error"]["kind"] == "step_error"
    assert bad["error"]["message"].startswith(
        "StageOutputInvalid: stage 2 (drafter) output does not fit Normalised:"
    )


async def test_handoff_transfers_the_conversation_with_its_history(settings: Settings) -> None:
    result, _ = await run_workflow(
        settings,
        "helpdesk",
        "hand-1",
        {"prompt": "I was charged twice on my invoice", "session_id": "customer-7"},
    )
    assert result["status"] == "completed", result
    assert result["output"] == (
        "Billing here: about 'I was charged twice on my invoice', I can see 1 earlier"
        " turn(s) of this conversation."
    )
    events, messages = recorded(settings, "hand-1")
    assert flow(messages) == [
        ("request", "helpdesk", "triage"),
        ("response", "triage", "helpdesk"),
        ("handoff", "helpdesk", "billing"),
        ("response", "billing", "helpdesk"),
    ]
    children = child_runs(settings, events)
    assert [c.get("session_id") for c, _ in children] == ["customer-7", "customer-7"]
    assert_linked("hand-1", messages, children)
    # Without a handoff the triage agent answers itself.
    plain, _ = await run_workflow(settings, "helpdesk", "hand-2", "hi")
    assert plain["output"] == "Hello! Ask me about billing or a technical problem."


async def test_cancelling_a_workflow_stops_its_outstanding_children(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Three slow children on a worker with one slot: one runs, two wait in the stream.
    A cancel on <prefix>.tasks.workflow.cancel ends the workflow and every child run as
    cancelled, with the reason; the waiting children never call their model."""
    journal = tmp_path / "journal.txt"
    monkeypatch.setenv(MODEL_PAUSE_ENV, "3")
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    settings = settings.model_copy(update={"worker_concurrency": 1})
    async with running_worker(settings), nats_client(settings) as nc:
        await start(nc, settings, "slow_fan", "cx-1", "slow")
        for _ in range(200):  # until the first child's model call is under way
            if journal.exists() and "model" in journal.read_text():
                break
            await asyncio.sleep(0.05)
        cancel = {"task_id": "cx-1", "reason": "the user gave up"}
        await nc.jetstream().publish(
            workflow_cancel_subject(settings.subject_prefix), json.dumps(cancel).encode()
        )
        result = await outcome(nc, settings, "cx-1")
        await asyncio.sleep(4)  # let the running child reach its next save
    assert result["status"] == "failed", result
    assert (result["error"]["kind"], result["error"]["message"]) == (
        "cancelled",
        "the user gave up",
    )
    events, _ = recorded(settings, "cx-1")
    store = EventStore(settings)
    try:
        for child, _requested in child_runs(settings, events):
            run = store.get(run_id_for(child["task_id"]), AgentRun)
            assert run is not None and run.status == "failed", child
            assert run.error_kind == "cancelled"
            assert run.error_message == "workflow cx-1 cancelled: the user gave up"
    finally:
        store.close()
    model_calls = [line for line in journal.read_text().splitlines() if "model" in line]
    assert len(model_calls) == 1  # only the child that was running when it was cancelled


async def test_replay_re_executes_the_workflow_on_its_recorded_child_outcomes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A replay runs the steps that dispatched children again, with `call_agents`
    serving the recorded outcomes: no child runs and no model call (any model call
    raises here), and a changed step shows as a divergence at that step."""
    from pydantic_ai.models.function import FunctionModel

    from agentledger.handlers.catalog import Catalog
    from agentledger.handlers.graphs.replay import recorded_graph_run, replay_graph_run

    for graph, task_id, inputs in (
        ("report", "rp-1", "tides"),
        ("opinions", "rp-2", "a four-day week"),
        ("helpdesk", "rp-3", "my login fails with an error"),
    ):
        result, _ = await run_workflow(settings, graph, task_id, inputs)
        assert result["status"] == "completed", result

    async def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a replay called a model")

    monkeypatch.setattr(FunctionModel, "request", no_model)
    catalog = Catalog.load(settings.catalog)
    text = catalog.path.read_text()
    store = EventStore(settings)
    try:
        for task_id in ("rp-1", "rp-2", "rp-3"):
            report = await replay_graph_run(
                recorded_graph_run(store, graph_run_id_for(task_id)), catalog
            )
            assert report.verdict == "identical", report
            assert report.served_steps == report.recorded_steps
        # The same record, replayed with the parallel workflow's policy changed.
        changed = tmp_path / "changed.toml"
        changed.write_text(text.replace('policy = "best_effort"', 'policy = "fail_fast"', 1))
        report = await replay_graph_run(
            recorded_graph_run(store, graph_run_id_for("rp-2")), Catalog.load(changed)
        )
    finally:
        store.close()
    assert report.verdict == "diverged"
    assert report.divergence is not None and report.divergence.node_id == "fan_out"
    assert "re-executed on its recorded child outcomes" in report.divergence.message


async def test_participants_share_a_scratchpad_with_optimistic_concurrency(
    settings: Settings,
) -> None:
    """Four counters at once read the workflow scratchpad's `count` and write it + 1 at
    the revision they read; a write that lost the race is told so and retried. Every
    increment lands once: the reader sees 4, and the pad's history is 1, 2, 3, 4."""
    from agentledger.domain.orchestration.scratchpad import Scratchpad, scratchpad_id_for

    result, _ = await run_workflow(settings, "tally", "tally-1", "count")
    assert result["status"] == "completed", result
    assert result["output"] == "count = 4"
    store = EventStore(settings)
    try:
        pad = store.events(scratchpad_id_for("tally-1"))
        events, _ = recorded(settings, "tally-1")
        children = child_runs(settings, events)
    finally:
        store.close()
    written = [e for e in pad if isinstance(e, Scratchpad.ValueWritten)]
    assert [(e.key, e.value) for e in written] == [("count", n) for n in (1, 2, 3, 4)]
    counters = {c["task_id"] for c, _ in children if c["agent"] == "counter"}
    assert {e.writer.split(":", 1)[1] for e in written} == counters  # each wrote once


async def test_the_scratchpad_tools_outside_a_workflow_say_so() -> None:
    from agentledger.handlers.orchestration.scratchpad import scratchpad_read, scratchpad_write

    assert (await scratchpad_read("k"))["error"].startswith("there is no scratchpad here")
    assert "error" in await scratchpad_write("k", 1)


async def test_a_workflow_answers_the_reply_subject_it_was_started_with(
    settings: Settings,
) -> None:
    """The start's delivery ends with the workflow waiting; the outcome still reaches
    the client's `Agentledger-Reply-To` once the last child ends (it used to reach the
    results subject only: `agentledger publish-graph` waited until its timeout)."""
    async with running_worker(settings), nats_client(settings) as nc:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        payload = {"task_id": "reply-1", "graph": "write_up", "inputs": "a reply"}
        await nc.jetstream().publish(
            graph_task_subject(settings.subject_prefix, "write_up"),
            json.dumps(payload).encode(),
            headers={"Nats-Msg-Id": "reply-1", "Agentledger-Reply-To": inbox},
        )
        answer = json.loads((await sub.next_msg(timeout=30)).data)
    assert answer["task_id"] == "reply-1"
    assert (answer["status"], answer["output"]) == ("completed", "Edited: A reply.")
    events, _ = recorded(settings, "reply-1")
    dispatches = [e for e in events if isinstance(e, GraphRun.ChildrenDispatched)]
    assert [d.reply_to for d in dispatches] == [inbox, None]  # the second: from a child's end


async def test_a_cancelled_workflow_answers_the_reply_subject_it_was_started_with(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_PAUSE_ENV, "3")
    async with running_worker(settings), nats_client(settings) as nc:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        payload = {"task_id": "reply-2", "graph": "slow_fan", "inputs": "slow"}
        await nc.jetstream().publish(
            graph_task_subject(settings.subject_prefix, "slow_fan"),
            json.dumps(payload).encode(),
            headers={"Nats-Msg-Id": "reply-2", "Agentledger-Reply-To": inbox},
        )
        for _ in range(100):  # until it waits for its children
            events, _ = recorded(settings, "reply-2")
            if any(isinstance(e, GraphRun.ChildrenDispatched) for e in events):
                break
            await asyncio.sleep(0.05)
        cancel = {"task_id": "reply-2", "reason": "changed my mind"}
        await nc.jetstream().publish(
            workflow_cancel_subject(settings.subject_prefix), json.dumps(cancel).encode()
        )
        answer = json.loads((await sub.next_msg(timeout=30)).data)
    assert (answer["task_id"], answer["status"]) == ("reply-2", "failed")
    assert answer["error"]["kind"] == "cancelled"


async def test_a_child_past_its_step_timeout_fails_the_step(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """step_timeout_s = 0.5 and a child whose model takes 3 s: the child ends failed
    with deadline_exceeded (its run stops there), which fails the fail-fast step."""
    monkeypatch.setenv(MODEL_PAUSE_ENV, "3")
    result, _ = await run_workflow(settings, "hasty", "hasty-1", "slow")
    assert result["status"] == "failed", result
    assert result["error"]["kind"] == "step_error"
    assert "deadline_exceeded" in result["error"]["message"]
    events, _ = recorded(settings, "hasty-1")
    finished = [e.outcome for e in events if isinstance(e, GraphRun.ChildFinished)]
    assert [o["error"]["kind"] for o in finished if o["status"] != "completed"] == [
        "deadline_exceeded"
    ]
