"""A run resumed after a crash at any save boundary ends as the uninterrupted run does,
calls the model only for steps that were not recorded, reruns no recorded tool outcome,
and records the same events (so it replays `identical`).

The crash is simulated by copying the uninterrupted run's events up to each save into a
fresh store and resuming there (the process-level crash tests kill real workers:
tests/integration/test_crash_recovery.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentledger.domain.ids import run_id_for
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.replay import replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, EventStore
from support.agents import JOURNAL_ENV, read_journal
from support.replay_agents import write_replay_catalog

pytestmark = pytest.mark.asyncio


class SaveLog(EventStore):
    """An in-memory store that notes how many events of one run each save left."""

    def __init__(self, run_id: Any) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.run_id = run_id
        self.boundaries: list[int] = []

    def save(self, *objs: Any) -> int | None:
        result = super().save(*objs)
        self.boundaries.append(len(self.events(self.run_id)))
        return result


CASES = [
    ("calculator", "add 2 and 3"),
    ("planner", "how warm?"),  # parallel tool calls
    ("picky", "set a level"),  # a tool retry
    ("counter", "how many?"),  # an output retry
    ("exploding", "boom"),  # a tool error
    ("half_broken", "go"),  # a tool error while a sibling call still runs
    ("stubborn", "well?"),  # answers rejected until the run fails
    ("effect", "go"),
]


@pytest.mark.parametrize(("agent", "prompt"), CASES, ids=[c[0] for c in CASES])
async def test_resuming_at_every_save_boundary_gives_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str, prompt: str
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    task = RunAgent(task_id="t", agent=agent, prompt=prompt)
    run_id = run_id_for("t")
    whole = SaveLog(run_id)
    first = await AgentRunner(store=AsyncEventStore(whole, 0), catalog=catalog).run(
        task, first_delivery=True
    )
    events = whole.events(run_id)
    names = [type(e).__name__ for e in events]
    assert whole.boundaries[-1] == len(events)
    for cut in whole.boundaries[:-1]:
        journal = tmp_path / f"journal-{cut}.txt"
        monkeypatch.setenv(JOURNAL_ENV, str(journal))
        resumed = EventStore.in_memory()
        resumed.save(*events[:cut])
        outcome = await AgentRunner(store=AsyncEventStore(resumed, 0), catalog=catalog).run(task)
        assert outcome.model_dump(exclude={"duration_ms"}) == first.model_dump(
            exclude={"duration_ms"}
        ), cut
        assert [type(e).__name__ for e in resumed.events(run_id)] == names, cut
        report = await replay_run(resumed, run_id, catalog)
        assert report.identical, (cut, report.divergence and report.divergence.diff)
        if agent == "effect":
            # The journal counts real model calls and tool effects after the crash.
            done = {type(e).__name__ for e in events[:cut]}
            ran = read_journal(journal)
            assert ("tool-effect go" in ran) == ("ToolCallFinished" not in done), (cut, ran)
            assert ran.count("model-call-1 go") == (0 if cut >= 3 else 1), (cut, ran)


async def test_a_recorded_tool_failure_is_served_again_not_rerun(tmp_path: Path) -> None:
    """A tool that failed with ModelRetry before the crash is not run a second time."""
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    task = RunAgent(task_id="p", agent="picky", prompt="set a level")
    run_id = run_id_for("p")
    whole = SaveLog(run_id)
    await AgentRunner(store=AsyncEventStore(whole, 0), catalog=catalog).run(
        task, first_delivery=True
    )
    events = whole.events(run_id)
    failed_at = next(i for i, e in enumerate(events, 1) if type(e).__name__ == "ToolCallFailed")
    assert failed_at in whole.boundaries
    resumed = EventStore.in_memory()
    resumed.save(*events[:failed_at])
    await AgentRunner(store=AsyncEventStore(resumed, 0), catalog=catalog).run(task)
    after = [type(e).__name__ for e in resumed.events(run_id)]
    assert after.count("ToolCallFailed") == 1 and after.count("ToolCallStarted") == 2


@pytest.mark.parametrize(("agent", "prompt"), CASES, ids=[c[0] for c in CASES])
async def test_a_run_cut_at_any_save_replays_identical_as_far_as_it_went(
    tmp_path: Path, agent: str, prompt: str
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    task = RunAgent(task_id="c", agent=agent, prompt=prompt)
    run_id = run_id_for("c")
    whole = SaveLog(run_id)
    await AgentRunner(store=AsyncEventStore(whole, 0), catalog=catalog).run(
        task, first_delivery=True
    )
    events = whole.events(run_id)
    assert (await replay_run(whole, run_id, catalog)).identical
    for cut in whole.boundaries[:-1]:
        partial = EventStore.in_memory()
        partial.save(*events[:cut])
        report = await replay_run(partial, run_id, catalog)
        assert report.identical, (cut, report.divergence and report.divergence.diff)
        assert report.note is not None and "in progress" in report.note


async def test_a_run_failing_after_an_answer_keeps_its_model_steps(tmp_path: Path) -> None:
    """Regression: answers held back for the completion were lost when the run failed."""
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    store = EventStore.in_memory()
    outcome = await AgentRunner(store=AsyncEventStore(store, 0), catalog=catalog).run(
        RunAgent(task_id="s", agent="stubborn", prompt="well?"), first_delivery=True
    )
    assert outcome.status == "failed" and outcome.error is not None
    assert outcome.error.kind == "model_error"
    names = [type(e).__name__ for e in store.events(run_id_for("s"))]
    assert names == [
        "RunRequested",
        "ModelRequestSent",
        "ModelResponseReceived",
        "ModelRequestSent",
        "ModelResponseReceived",
        "RunFailed",
    ]
    assert outcome.usage.requests == 2
    limited = await AgentRunner(store=AsyncEventStore(store, 0), catalog=catalog).run(
        RunAgent(task_id="l", agent="stubborn", prompt="well?", usage_limits={"request_limit": 1}),
        first_delivery=True,
    )
    assert limited.error is not None and limited.error.kind == "usage_limit_exceeded"
    assert limited.usage.requests == 1
    for task_id in ("s", "l"):
        assert (await replay_run(store, run_id_for(task_id), catalog)).identical


@pytest.mark.parametrize(
    ("recorded", "spans"),
    [
        # Nothing recorded but the request: the whole run is live.
        (2, ["chat calculator-fn", "chat calculator-fn", "execute_tool add"]),
        # The tool call recorded: that response is not requested again (no `chat` span).
        (3, ["chat calculator-fn", "execute_tool add"]),
        # Its result recorded too: the tool's span is still there, its result from the ledger.
        (5, ["chat calculator-fn", "execute_tool add"]),
    ],
)
async def test_a_resumed_run_traces_what_this_delivery_does(
    tmp_path: Path, recorded: int, spans: list[str]
) -> None:
    catalog = Catalog.load(write_replay_catalog(tmp_path))
    task = RunAgent(task_id="t", agent="calculator", prompt="add 2 and 3")
    whole = EventStore.in_memory()
    await AgentRunner(store=AsyncEventStore(whole, 0), catalog=catalog).run(
        task, first_delivery=True
    )
    resumed = EventStore.in_memory()
    resumed.save(*whole.events(run_id_for("t"))[:recorded])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runner = AgentRunner(
        store=AsyncEventStore(resumed, 0), catalog=catalog, tracer_provider=provider
    )
    assert (await runner.run(task)).status == "completed"
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == sorted([*spans, "invoke_agent calculator"])
