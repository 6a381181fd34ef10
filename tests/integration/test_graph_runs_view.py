"""The graph_runs view on both real view stores (PostgreSQL and SQLite): its tables,
its fold (the nested step update) and its queries."""

from __future__ import annotations

import pytest
from conftest import Backend, MakeSettings

from agentledger.infra.view_store import view_store_for
from agentledger.projections.graphs.runs import GraphRunsProjection, get_graph_run
from support.sample_graphs import fan_graph, recorded

pytestmark = pytest.mark.asyncio


async def test_a_graph_run_is_folded_and_read_back(
    make_settings: MakeSettings, backend: Backend
) -> None:
    _, events, output = await recorded(fan_graph, "fan", 7)
    views = view_store_for(make_settings(backend))
    try:
        projection = GraphRunsProjection()
        views.ensure(projection)
        with views.transaction() as cursor:
            projection.apply_batch(events, cursor)
        with views.read() as cursor:
            view = get_graph_run(cursor, task_id="task-fan")
    finally:
        views.close()
    assert view is not None
    assert (view.status, view.output) == ("completed", output)
    assert view.branches == {"route": "prep"}
    assert sorted(view.path[3:6]) == ["b1", "b2", "b3"]
    assert [s.status for s in view.step_runs] == ["finished"] * len(view.path)
