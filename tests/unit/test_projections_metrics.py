"""The metrics view: counts, usage, failure rate and latency percentiles per agent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

import pytest

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.domain.stats import percentile
from agentledger.projections.base import ProjectionError
from agentledger.projections.metrics import UNKNOWN_AGENT, MetricsProjection, agent_metrics


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in MetricsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def fold(cursor: sqlite3.Cursor, events: Iterable[object]) -> None:
    projection = MetricsProjection()
    for event in events:
        projection.apply(event, cursor)


def finished_run(
    task_id: str, agent: str, *, duration_ms: float, failed: bool = False, tools: int = 0
) -> AgentRun:
    run = AgentRun(
        task_id=task_id,
        agent=agent,
        prompt="p",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    run.send_model_request({})
    run.receive_model_response({}, "test", 100, 10)
    for i in range(tools):
        run.start_tool_call(f"c{i}", "add", {})
        run.finish_tool_call(f"c{i}", "add", 1)
    if failed:
        run.fail("model_error", "boom", retryable=False, duration_ms=duration_ms)
    else:
        run.complete("ok", cost_usd=0.5, duration_ms=duration_ms)
    return run


def test_counts_usage_cost_and_percentiles_per_agent(cursor: sqlite3.Cursor) -> None:
    durations = [10.0, 20.0, 30.0, 40.0, 1000.0]
    for i, duration in enumerate(durations):
        fold(
            cursor, finished_run(f"a-{i}", "alpha", duration_ms=duration, tools=1).collect_events()
        )
    fold(cursor, finished_run("a-f", "alpha", duration_ms=5.0, failed=True).collect_events())
    fold(cursor, finished_run("b-0", "beta", duration_ms=7.0).collect_events())

    alpha, beta = agent_metrics(cursor)
    assert alpha.agent == "alpha"
    assert (alpha.runs, alpha.completed, alpha.failed, alpha.running) == (6, 5, 1, 0)
    assert (alpha.requests, alpha.input_tokens, alpha.output_tokens) == (6, 600, 60)
    assert alpha.tool_calls == 5
    assert alpha.cost_usd == pytest.approx(2.5)
    assert alpha.failure_rate == pytest.approx(1 / 6)
    latencies = [*durations, 5.0]
    assert alpha.latency_p50_ms == percentile(latencies, 50)
    assert alpha.latency_p95_ms == percentile(latencies, 95)
    assert alpha.latency_p99_ms == percentile(latencies, 99)
    assert (beta.runs, beta.completed, beta.failure_rate, beta.latency_p99_ms) == (1, 1, 0.0, 7.0)
    assert agent_metrics(cursor, agent="beta") == [beta]
    assert agent_metrics(cursor, agent="nobody") == []


def test_in_flight_runs_count_usage_but_no_latency(cursor: sqlite3.Cursor) -> None:
    run = AgentRun(
        task_id="t",
        agent="alpha",
        prompt="p",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    run.send_model_request({})
    run.receive_model_response({}, "test", 3, 2)
    fold(cursor, run.collect_events())
    (alpha,) = agent_metrics(cursor)
    assert (alpha.runs, alpha.running, alpha.requests, alpha.input_tokens) == (1, 1, 1, 3)
    assert alpha.failure_rate is None and alpha.latency_p50_ms is None


def test_rejections_are_counted_apart(cursor: sqlite3.Cursor) -> None:
    for key, agent in (("k1", "alpha"), ("k2", None)):
        rejection = TaskRejection(
            key=key,
            task_id=None,
            agent=agent,
            subject="ledger.tasks.run.x",
            error_kind="invalid_payload",
            reason="bad",
            payload_excerpt="",
        )
        fold(cursor, rejection.collect_events())
    by_agent = {m.agent: m for m in agent_metrics(cursor)}
    assert set(by_agent) == {"alpha", UNKNOWN_AGENT}
    assert (by_agent["alpha"].rejected, by_agent["alpha"].runs) == (1, 0)


def test_applying_events_again_changes_nothing(cursor: sqlite3.Cursor) -> None:
    events = finished_run("t", "alpha", duration_ms=3.0, tools=2).collect_events()
    fold(cursor, events)
    before = agent_metrics(cursor)
    fold(cursor, events)
    assert agent_metrics(cursor) == before


def test_an_event_of_an_unknown_run_is_an_error(cursor: sqlite3.Cursor) -> None:
    _, *rest = finished_run("t", "alpha", duration_ms=3.0).collect_events()
    with pytest.raises(ProjectionError, match="before the run was requested"):
        fold(cursor, rest)


def _metrics_rows(cursor: sqlite3.Cursor) -> list[tuple[object, ...]]:
    return [
        *cursor.execute("SELECT * FROM al_agent_metrics ORDER BY agent").fetchall(),
        *cursor.execute("SELECT * FROM al_metric_runs ORDER BY run_id").fetchall(),
    ]


def test_a_batch_folds_like_one_event_at_a_time(cursor: sqlite3.Cursor) -> None:
    runs = []
    # Costs whose float sum depends on the order of the additions.
    for i, cost in enumerate((0.1, 0.2, 0.3, None, None)):
        run = AgentRun(
            task_id=f"c-{i}",
            agent="alpha",
            prompt="p",
            session_id=None,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        run.send_model_request({})
        run.receive_model_response({}, "test", 100 + i, 10)
        run.start_tool_call("c", "add", {})
        run.finish_tool_call("c", "add", 1)
        if i == 3:
            run.fail("model_error", "boom", retryable=False, duration_ms=2.0)
        else:
            run.complete("ok", cost_usd=cost, duration_ms=1.0 + i)
        runs.append(run)
    rejection = TaskRejection(
        key="k",
        task_id=None,
        agent=None,
        subject="ledger.tasks.run.x",
        error_kind="invalid_payload",
        reason="bad",
        payload_excerpt="",
    )
    events = [e for run in runs for e in run.collect_events()] + rejection.collect_events()
    fold(cursor, events)
    expected = _metrics_rows(cursor)
    (alpha,) = [row for row in expected if row[0] == "alpha"]
    assert alpha[-1] == (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)  # added in log order
    cursor.execute("DELETE FROM al_agent_metrics")
    cursor.execute("DELETE FROM al_metric_runs")

    projection = MetricsProjection()
    projection.apply_batch(events[:9], cursor)
    projection.apply_batch(events[7:], cursor)  # overlapping: applied events are skipped
    assert _metrics_rows(cursor) == expected
    projection.apply_batch(events, cursor)
    assert _metrics_rows(cursor) == expected
