"""Alert rules: the metrics of a window, the decision with hysteresis and a minimum
sample count, the runs view's windows, and the catalog's `[alerts.*]`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentledger.domain.monitoring.rules import AlertRule, WindowStats, decide, percentile
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.handlers.catalog import Catalog, CatalogError
from agentledger.projections.monitoring import window_stats
from agentledger.projections.runs import RunsProjection

RULE = AlertRule(name="errors", metric="error_rate", above=0.5, clear_below=0.2, min_samples=4)


def test_a_rule_raises_only_with_enough_samples_and_clears_only_well_below() -> None:
    assert decide(RULE, 1.0, 3, active=False) is None  # too few runs to judge
    assert decide(RULE, 0.5, 10, active=False) is None  # at the threshold: not above
    assert decide(RULE, 0.6, 4, active=False) == "raise"
    assert decide(RULE, 0.6, 4, active=True) is None  # raised once
    assert decide(RULE, 0.3, 10, active=True) is None  # hysteresis: not yet
    assert decide(RULE, 0.2, 10, active=True) == "clear"
    assert decide(RULE, None, 0, active=True) == "clear"  # nothing left in the window
    default = AlertRule(name="x", metric="error_rate", above=0.5)
    assert default.clear_at == pytest.approx(0.4)
    with pytest.raises(ValidationError, match="clear_below"):
        AlertRule(name="x", metric="error_rate", above=0.1, clear_below=0.5)


def test_the_metrics_of_a_window() -> None:
    stats = WindowStats(
        completed=8,
        failed=2,
        rejected=3,
        durations_ms=tuple(range(1, 101)),
        cost_usd=0.5,
        tokens=600,
    )
    assert stats.value("error_rate", 60) == (0.2, 10)
    assert stats.value("p95_latency_ms", 60) == (95, 100)
    assert stats.value("cost_per_hour", 60) == (30.0, 10)
    assert stats.value("tokens_per_minute", 300) == (120.0, 10)
    assert stats.value("rejections", 60) == (3.0, 13)
    assert WindowStats().value("error_rate", 60) == (None, 0)
    assert percentile([], 95) is None


def test_windows_come_from_the_runs_view() -> None:
    cursor = sqlite3.connect(":memory:").cursor()
    for statement in RunsProjection.ddl:
        cursor.execute(statement)
    projection = RunsProjection()
    for i, fails in enumerate([False, True, False]):
        run = AgentRun(
            task_id=f"t{i}",
            agent="calc",
            prompt="p",
            session_id=None,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        if fails:
            run.fail("tool_error", "broke", False, 20.0)
        else:
            run.complete("ok", 0.01, 10.0)
        for event in run.collect_events():
            projection.apply(event, cursor)
    rejected = TaskRejection(
        key="k",
        task_id="t9",
        agent="calc",
        subject="s",
        error_kind="invalid_task",
        reason="bad",
        payload_excerpt="{}",
    )
    for event in rejected.collect_events():
        projection.apply(event, cursor)
    stats = window_stats(cursor, "2000-01-01T00:00:00")["calc"]
    assert (stats.completed, stats.failed, stats.rejected) == (2, 1, 1)
    assert sorted(stats.durations_ms) == [10.0, 10.0, 20.0]
    assert window_stats(cursor, "2999-01-01T00:00:00") == {}


def _catalog(tmp_path: Path, alerts: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[agents.calc]\nref = "agentledger.catalog.example_agents:calculator"\n' + alerts
    )
    return path


def test_the_catalog_declares_alert_rules(tmp_path: Path) -> None:
    catalog = Catalog.load(
        _catalog(
            tmp_path,
            '[alerts.slow]\nagent = "calc"\nmetric = "p95_latency_ms"\nwindow = "1m"\nabove = 2000\n',
        )
    )
    (rule,) = catalog.alerts
    assert (rule.name, rule.agent, rule.metric, rule.above) == (
        "slow",
        "calc",
        "p95_latency_ms",
        2000,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('metric = "vibes"\nabove = 1', "metric"),
        ('metric = "error_rate"\nabove = 1\nagent = "nobody"', "no agent 'nobody'"),
        ('metric = "error_rate"\nabove = 1\nwindow = "2d"', "window"),
    ],
)
def test_a_bad_alert_table_is_a_clear_catalog_error(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(CatalogError, match="alert 'r'") as caught:
        Catalog.load(_catalog(tmp_path, f"[alerts.r]\n{table}\n"))
    assert message in str(caught.value)
