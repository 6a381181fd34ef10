"""The alerts view, fed with the `Alert` aggregate's own events over in-memory SQLite:
raised, cleared, raised again; filters; a replayed event changes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from agentledger.domain.monitoring.alert import Alert
from agentledger.projections.monitoring import AlertsProjection, list_alerts


@pytest.fixture
def cursor() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    cur = connection.cursor()
    for statement in AlertsProjection.ddl:
        cur.execute(statement)
    yield cur
    connection.close()


def _raise(alert: Alert, value: float) -> None:
    alert.raise_alert("error_rate", "1m", value, 0.5, 6)


def _clear(alert: Alert) -> None:
    alert.clear("error_rate", "1m", None, 0.2, 0)


def test_an_alert_is_raised_cleared_and_raised_again(cursor: sqlite3.Cursor) -> None:
    alert = Alert(rule="errors", agent="moody")
    _raise(alert, 0.8)
    first = alert.collect_events()
    _clear(alert)
    second = alert.collect_events()
    projection = AlertsProjection()
    projection.apply_batch(first, cursor)
    (raised,) = list_alerts(cursor)
    assert (raised.rule, raised.agent, raised.state, raised.value) == (
        "errors",
        "moody",
        "raised",
        0.8,
    )
    assert raised.threshold == 0.5 and raised.samples == 6 and raised.window == "1m"
    assert raised.times_raised == 1 and raised.cleared_at is None
    assert raised.raised_at == raised.changed_at

    projection.apply_batch(second, cursor)
    (cleared,) = list_alerts(cursor)
    assert cleared.state == "cleared" and cleared.value is None and cleared.threshold == 0.2
    assert cleared.raised_at == raised.raised_at and cleared.cleared_at is not None

    projection.apply_batch([*first, *second], cursor)  # replayed: nothing changes
    assert list_alerts(cursor) == [cleared]

    _raise(alert, 0.9)
    projection.apply_batch(alert.collect_events(), cursor)
    (again,) = list_alerts(cursor)
    assert again.state == "raised" and again.times_raised == 2 and again.value == 0.9


def test_filters_and_order(cursor: sqlite3.Cursor) -> None:
    projection = AlertsProjection()
    for agent in ("a", "b", "c"):
        alert = Alert(rule="slow", agent=agent)
        _raise(alert, 2.0)
        if agent == "b":
            _clear(alert)
        projection.apply_batch(alert.collect_events(), cursor)
    assert [a.agent for a in list_alerts(cursor)] == ["c", "b", "a"]  # latest change first
    assert [a.agent for a in list_alerts(cursor, state="raised")] == ["c", "a"]
    assert [a.agent for a in list_alerts(cursor, state="cleared")] == ["b"]
    assert [a.agent for a in list_alerts(cursor, agent="a")] == ["a"]
    assert [a.agent for a in list_alerts(cursor, limit=1, offset=1)] == ["b"]
