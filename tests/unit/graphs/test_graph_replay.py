"""Replay of graph runs: recorded steps served (no step body runs), the graph's own logic
run again, `identical` or the first divergence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.graphs.catalog import GraphEntry
from agentledger.handlers.graphs.executor import GraphExecutor, StepLimitExceeded
from agentledger.handlers.graphs.replay import (
    GraphNotInCatalog,
    RecordedGraphRun,
    replay_graph_run,
)
from support import sample_graphs
from support.sample_graphs import CALLS, recorded

pytestmark = pytest.mark.asyncio

GRAPHS = {
    "fan": "fan_graph",
    "approval": "approval_graph",
    "threshold": "threshold_graph",
    "cycle": "cycle_graph",
    "countdown": "countdown_graph",
}


def catalog() -> Catalog:
    graphs = {
        name: GraphEntry(name=name, ref=f"support.sample_graphs:{attribute}")
        for name, attribute in GRAPHS.items()
    }
    return Catalog(path=Path("catalog.toml"), entries={}, graphs=graphs)


async def replay(events: list[Any]) -> Any:
    CALLS.clear()
    report = await replay_graph_run(RecordedGraphRun(events=tuple(events)), catalog())
    assert CALLS == [], "a replay ran a step body"
    return report


@pytest.mark.parametrize("inputs", [10, 2])
async def test_a_recorded_run_replays_identical_with_no_step_run(inputs: int) -> None:
    _, events, _ = await recorded(sample_graphs.fan_graph, "fan", inputs)
    report = await replay(events)
    assert report.identical and report.divergence is None and report.note is None
    assert report.served_steps == report.recorded_steps > 5


async def test_a_changed_decision_is_the_first_divergence_at_the_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, events, output = await recorded(sample_graphs.threshold_graph, "threshold", 7)
    assert output == "high 7"
    assert (await replay(events)).identical
    monkeypatch.setattr(sample_graphs, "LIMIT", 8)  # the decision now sends 7 to `low`
    report = await replay(events)
    assert report.verdict == "diverged"
    branch = next(e for e in events if isinstance(e, GraphRun.BranchTaken))
    assert report.divergence.node_id == "gate"
    assert report.divergence.index == branch.originator_version
    assert "took branch 1 (to low); the record has branch 0 (to high)" in (
        report.divergence.summary()
    )


async def test_a_paused_run_replays_up_to_its_pause() -> None:
    _, events, _ = await recorded(sample_graphs.approval_graph, "approval", "memo")
    report = await replay(events)
    assert report.identical and report.served_steps == 1
    assert report.note == "the recording stops at approve: the run paused here for input"


async def test_a_run_stopped_at_its_step_bound_replays_to_the_same_bound() -> None:
    run = GraphRun(
        task_id="c", graph="cycle", inputs=0, state=None, metadata={}, max_steps=6, deadline=None
    )
    stored = list(run.collect_events())

    async def save() -> None:
        stored.extend(run.collect_events())

    with pytest.raises(StepLimitExceeded):
        await GraphExecutor(
            sample_graphs.cycle_graph, run, GraphHistory.fold(stored), save=save
        ).execute(0)
    run.fail("step_limit_exceeded", "bound", 1.0)
    stored.extend(run.collect_events())
    report = await replay(stored)
    assert report.identical and "step bound" in (report.note or "")


async def test_a_graph_missing_from_the_catalog_is_named() -> None:
    _, events, _ = await recorded(sample_graphs.threshold_graph, "gone", 1)
    with pytest.raises(GraphNotInCatalog, match="graph 'gone' of run 'task-gone'"):
        await replay_graph_run(RecordedGraphRun(events=tuple(events)), catalog())


async def test_a_basenode_graph_replays_identical() -> None:
    _, events, output = await recorded(
        sample_graphs.countdown_graph, "countdown", sample_graphs.CountFrom(3)
    )
    assert output == 6
    assert (await replay(events)).identical
