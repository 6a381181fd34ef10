"""Replay: what it compares, where it reports a divergence, and that it has no effects.

Runs are recorded by the real runner into an in-memory store (the stores themselves are
covered by tests/integration/test_replay.py); replay never needs one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.replay import RunNotFound, replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from support.agents import JOURNAL_ENV, read_journal
from support.replay_agents import write_replay_catalog

pytestmark = pytest.mark.asyncio


async def _record(catalog: Catalog, *tasks: RunAgent) -> EventStore:
    memory = EventStore.in_memory()
    store = AsyncEventStore(memory, 2)
    runner = AgentRunner(store=store, catalog=catalog)
    for task in tasks:
        await runner.run(task, first_delivery=True)
    return memory


def _variant(tmp_path: Path, ref: str) -> Catalog:
    return Catalog.load(
        write_replay_catalog(tmp_path, f"{ref.replace(':', '_')}.toml", calculator=ref)
    )


CALC = RunAgent(task_id="calc", agent="calculator", prompt="add 17 and 25")
# Recorded events of CALC: 1 RunRequested, 2 ModelRequestSent, 3 ModelResponseReceived
# (asks for `add`), 4 ToolCallStarted, 5 ToolCallFinished, 6 ModelRequestSent (tool
# return), 7 ModelResponseReceived (answer), 8 RunCompleted.


async def test_changed_instructions_diverge_at_the_first_request(tmp_path: Path) -> None:
    store = await _record(Catalog.load(write_replay_catalog(tmp_path)), CALC)
    report = await replay_run(
        store, run_id_for("calc"), _variant(tmp_path, "support.replay_agents:calculator_reworded")
    )
    assert report.verdict == "diverged"
    assert report.divergence is not None
    assert report.divergence.index == 2
    # Same event type on both sides: the summary names the field that differs.
    assert report.divergence.summary() == (
        "diverged at event 2: ModelRequestSent differs in message.instructions"
    )
    diff = "\n".join(report.divergence.diff)
    assert '-    "instructions": "You are a calculator. Use the tools for arithmetic."' in diff
    assert '+    "instructions": "You are a careful calculator. Always use the tools."' in diff


@pytest.mark.parametrize(
    "ref",
    ["support.replay_agents:calculator_renamed", "support.replay_agents:calculator_reschemed"],
    ids=["tool-renamed", "tool-signature-changed"],
)
async def test_changed_tool_diverges_where_the_recorded_call_no_longer_fits(
    tmp_path: Path, ref: str
) -> None:
    store = await _record(Catalog.load(write_replay_catalog(tmp_path)), CALC)
    report = await replay_run(store, run_id_for("calc"), _variant(tmp_path, ref))
    assert report.divergence is not None
    # The recorded response asks for add(a, b); the edited agent cannot run that call,
    # so instead of the tool call (event 4) pydantic-ai sends a retry prompt.
    assert report.divergence.index == 4
    assert report.divergence.expected is not None and report.divergence.actual is not None
    assert report.divergence.expected.name == "ToolCallStarted"
    assert report.divergence.actual.name == "ModelRequestSent"


async def test_changed_tool_body_diverges_at_its_result_only_with_run_tools(
    tmp_path: Path,
) -> None:
    store = await _record(Catalog.load(write_replay_catalog(tmp_path)), CALC)
    edited = _variant(tmp_path, "support.replay_agents:calculator_off_by_one")
    served = await replay_run(store, run_id_for("calc"), edited)
    assert served.identical  # recorded results are served: the body is not run
    ran = await replay_run(store, run_id_for("calc"), edited, run_tools=True)
    assert ran.divergence is not None and ran.divergence.index == 5
    assert ran.divergence.expected is not None and ran.divergence.actual is not None
    assert ran.divergence.expected.data["result"] == 42.0
    assert ran.divergence.actual.data["result"] == 43.0


async def test_a_divergence_in_a_later_session_turn_is_found_in_that_turn(
    tmp_path: Path,
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    turns = [
        RunAgent(task_id=f"t{i}", agent="notes", prompt=p, session_id="s")
        for i, p in enumerate(["remember a", "remember b", "what do you remember?"])
    ]
    store = await _record(catalog, *turns)
    for turn in turns:
        assert (await replay_run(store, run_id_for(turn.task_id), catalog)).identical
    edited = Catalog.load(
        write_replay_catalog(tmp_path, "edited.toml", notes="support.replay_agents:planner")
    )
    report = await replay_run(store, run_id_for("t2"), edited)
    assert report.divergence is not None and report.divergence.index == 2


async def test_replay_calls_no_model_and_runs_no_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.txt"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    store = await _record(catalog, RunAgent(task_id="fx", agent="effect", prompt="go"))
    recorded = read_journal(journal)
    assert recorded == ["model-call-1 go", "tool-start go", "tool-effect go", "model-call-2 go"]
    for _ in range(3):
        assert (await replay_run(store, run_id_for("fx"), catalog)).identical
    assert read_journal(journal) == recorded


async def test_a_run_cut_short_replays_up_to_where_its_recording_stops(
    tmp_path: Path,
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    store = await _record(catalog, CALC)
    events = store.events(run_id_for("calc"))
    # A worker died after the tool was asked for (events 1-3 recorded, nothing else).
    cut = EventStore.in_memory()
    cut.save(*events[:3])
    report = await replay_run(cut, run_id_for("calc"), catalog)
    assert report.identical and report.replayed_events == 3
    assert report.note is not None and "still in progress" in report.note

    # An outage ended it there: the recording ends in transient_exhausted.
    ended = EventStore.in_memory()
    run = AgentRun(
        task_id="calc2",
        agent="calculator",
        prompt="add 17 and 25",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    run.send_model_request(events[1].message)
    response = events[2]
    assert isinstance(response, AgentRun.ModelResponseReceived)
    run.receive_model_response(
        response.message, response.model_name, response.input_tokens, response.output_tokens
    )
    run.fail("transient_exhausted", "model unavailable: 502", True, 5.0)
    ended.save(run)
    report = await replay_run(ended, run.id, catalog)
    assert report.identical, report.divergence
    assert report.note is not None and "transient_exhausted" in report.note


async def test_replay_of_an_unknown_run_says_so(tmp_path: Path) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    with pytest.raises(RunNotFound, match="no run"):
        await replay_run(EventStore.in_memory(), run_id_for("nope"), catalog)
