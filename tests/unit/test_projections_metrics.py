"""The metrics view: counts, usage, failure rate and latency percentiles per agent."""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Iterable, Iterator
from decimal import Decimal

import pytest

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.domain.stats import BUCKETS_PER_DOUBLING, percentile
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
        *cursor.execute("SELECT * FROM al_metric_latency ORDER BY agent, bucket").fetchall(),
    ]


def _clear(cursor: sqlite3.Cursor) -> None:
    for table in MetricsProjection.tables:
        cursor.execute(f"DELETE FROM {table}")


def test_a_batch_folds_like_one_event_at_a_time(cursor: sqlite3.Cursor) -> None:
    runs = []
    # Costs whose float sum would depend on the order of the additions.
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
    (alpha,) = cursor.execute("SELECT * FROM al_agent_metrics WHERE agent = 'alpha'").fetchall()
    assert alpha[-1] == 600_000_000  # nano-dollars: exact, whatever the order
    _clear(cursor)

    projection = MetricsProjection()
    projection.apply_batch(events[:9], cursor)
    projection.apply_batch(events[7:], cursor)  # overlapping: applied events are skipped
    assert _metrics_rows(cursor) == expected
    projection.apply_batch(events, cursor)
    assert _metrics_rows(cursor) == expected


def _completed_run(task_id: str, agent: str, cost: float | None, duration_ms: float) -> AgentRun:
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
    run.complete("ok", cost_usd=cost, duration_ms=duration_ms)
    return run


def test_many_small_costs_sum_exactly_however_the_log_is_cut(cursor: sqlite3.Cursor) -> None:
    # Each cost is a float; summed as floats the total depends on where batches start
    # (0.0070723500000000016 one way, 0.00707235 another).
    costs = [0.00000235 * (1 + i % 7) + 0.0000001 * (i % 3) for i in range(600)]
    events = [
        e
        for i, cost in enumerate(costs)
        for e in _completed_run(f"c-{i}", "alpha", cost, 1.0 + i).collect_events()
    ]
    fold(cursor, events)  # one event at a time
    one_by_one = _metrics_rows(cursor)
    _clear(cursor)
    MetricsProjection().apply_batch(events, cursor)  # one batch
    assert _metrics_rows(cursor) == one_by_one
    _clear(cursor)
    projection = MetricsProjection()
    for start in range(0, len(events), 37):  # batches cut anywhere (as a rebuild cuts them)
        projection.apply_batch(events[start : start + 37], cursor)
    assert _metrics_rows(cursor) == one_by_one

    (alpha,) = agent_metrics(cursor)
    exact = sum(Decimal(repr(c)).quantize(Decimal("1e-9")) for c in costs)
    assert alpha.cost_usd == float(exact)
    assert alpha.cost_usd != sum(costs)  # what float addition gave


def test_latency_percentiles_come_from_a_bounded_histogram(cursor: sqlite3.Cursor) -> None:
    rng = random.Random(7)
    durations = [rng.lognormvariate(5, 1.5) for _ in range(3000)]
    projection = MetricsProjection()
    events = [
        e
        for i, duration in enumerate(durations)
        for e in _completed_run(f"l-{i}", "alpha", None, duration).collect_events()
    ]
    for start in range(0, len(events), 500):
        projection.apply_batch(events[start : start + 500], cursor)

    (alpha,) = agent_metrics(cursor)
    for q, estimate in (
        (50, alpha.latency_p50_ms),
        (95, alpha.latency_p95_ms),
        (99, alpha.latency_p99_ms),
    ):
        exact = percentile(durations, q)
        assert exact is not None and estimate == pytest.approx(exact, rel=0.045)
    # What a query reads grows with the spread of the latencies, not with the runs.
    (buckets,) = cursor.execute("SELECT COUNT(*) FROM al_metric_latency").fetchone()
    spread = math.log2(max(durations) / min(durations))
    assert buckets <= spread * BUCKETS_PER_DOUBLING + 1 < len(durations) / 10


def test_agents_are_listed_a_page_at_a_time(cursor: sqlite3.Cursor) -> None:
    for i in range(5):
        fold(cursor, _completed_run(f"p-{i}", f"agent-{i}", 0.1, 1.0).collect_events())
    assert [m.agent for m in agent_metrics(cursor, limit=2)] == ["agent-0", "agent-1"]
    assert [m.agent for m in agent_metrics(cursor, limit=2, offset=3)] == ["agent-3", "agent-4"]
    with pytest.raises(ValueError, match="limit >= 1"):
        agent_metrics(cursor, limit=0)
