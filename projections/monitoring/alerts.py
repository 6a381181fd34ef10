"""The alerts view: one row per alert (a rule for one agent), raised or cleared, with
the figures of its latest change, folded from the `Alert` aggregate's events.

The monitor decides from rolling windows (`agentledger.projections.monitoring.windows`);
this view only says what it decided, so an operator (the `alerts` query, the dashboard)
sees the active alerts and the recent ones without reading the log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentledger.domain.monitoring.alert import Alert
from agentledger.projections.base import (
    Projection,
    ViewCursor,
    group_by_aggregate,
    iso,
    optional_key,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = ["AlertState", "AlertView", "AlertsProjection", "list_alerts"]

AlertState = Literal["raised", "cleared"]

_COLUMNS = (
    "alert_id",
    "rule",
    "agent",
    "state",
    "metric",
    "time_window",
    "value",
    "threshold",
    "samples",
    "raised_at",
    "cleared_at",
    "changed_at",
    "times_raised",
    "version",
)


class AlertView(BaseModel):
    """An alert as the query API returns it."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    rule: str
    agent: str
    state: AlertState
    metric: str | None
    window: str | None
    value: float | None
    """The value measured at the latest change (None: the window had emptied)."""
    threshold: float | None
    """The threshold it crossed: `above` when raised, the clear level when cleared."""
    samples: int
    raised_at: datetime | None
    """When it was last raised."""
    cleared_at: datetime | None
    """When it was last cleared (None while raised for the first time)."""
    changed_at: datetime
    times_raised: int


class AlertsProjection(Projection):
    name: ClassVar[str] = "alerts"
    tables: ClassVar[tuple[str, ...]] = ("al_alerts",)
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS al_alerts ("
        " alert_id TEXT PRIMARY KEY, rule TEXT NOT NULL, agent TEXT NOT NULL,"
        " state TEXT NOT NULL, metric TEXT, time_window TEXT, value DOUBLE PRECISION,"
        " threshold DOUBLE PRECISION, samples INTEGER NOT NULL, raised_at TEXT,"
        " cleared_at TEXT, changed_at TEXT NOT NULL, times_raised INTEGER NOT NULL,"
        " version BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS al_alerts_changed ON al_alerts (changed_at)",
        "CREATE INDEX IF NOT EXISTS al_alerts_state ON al_alerts (state, changed_at)",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch([event], cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        groups = group_by_aggregate(events, Alert.Event)
        if not groups:
            return
        rows = select_rows(cursor, "al_alerts", _COLUMNS, groups)
        touched: dict[str, dict[str, Any]] = {}
        for key, group in groups.items():
            row = rows.get(key)
            for event in group:
                if row is not None and event.originator_version <= row["version"]:
                    continue
                row = _fold(row, key, event)
                if row is not None:
                    touched[key] = row
        if touched:
            cursor.executemany(
                upsert_sql("al_alerts", _COLUMNS, ("alert_id",)),
                [tuple(row[c] for c in _COLUMNS) for row in touched.values()],
            )


def _fold(row: dict[str, Any] | None, key: str, event: Any) -> dict[str, Any] | None:
    """The alert's row after `event` (None before its `AlertOpened`)."""
    at = iso(event.timestamp)
    if isinstance(event, Alert.AlertOpened):
        return {
            "alert_id": key,
            "rule": event.rule,
            "agent": view_key(event.agent),
            "state": "cleared",
            "metric": None,
            "time_window": None,
            "value": None,
            "threshold": None,
            "samples": 0,
            "raised_at": None,
            "cleared_at": None,
            "changed_at": at,
            "times_raised": 0,
            "version": event.originator_version,
        }
    if row is None or not isinstance(event, Alert.AlertRaised | Alert.AlertCleared):
        return row
    raised = isinstance(event, Alert.AlertRaised)
    return {
        **row,
        "state": "raised" if raised else "cleared",
        "metric": event.metric,
        "time_window": event.window,
        "value": None if event.value is None else float(event.value),
        "threshold": float(event.threshold),
        "samples": int(event.samples),
        "raised_at": at if raised else row["raised_at"],
        "cleared_at": row["cleared_at"] if raised else at,
        "changed_at": at,
        "times_raised": row["times_raised"] + (1 if raised else 0),
        "version": event.originator_version,
    }


def list_alerts(
    cursor: ViewCursor,
    *,
    state: AlertState | None = None,
    agent: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[AlertView]:
    """Alerts matching every given filter, the latest changed first."""
    rows = select_page(
        cursor,
        f"SELECT {', '.join(_COLUMNS)} FROM al_alerts",
        (("state", state), ("agent", optional_key(agent))),
        order_by="changed_at DESC, alert_id",
        limit=limit,
        offset=offset,
        query="list_alerts",
    )
    return [_view(dict(zip(_COLUMNS, row, strict=True))) for row in rows]


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _view(row: dict[str, Any]) -> AlertView:
    changed_at = _when(row["changed_at"])
    assert changed_at is not None
    return AlertView(
        alert_id=row["alert_id"],
        rule=row["rule"],
        agent=row["agent"],
        state=row["state"],
        metric=row["metric"],
        window=row["time_window"],
        value=row["value"],
        threshold=row["threshold"],
        samples=int(row["samples"]),
        raised_at=_when(row["raised_at"]),
        cleared_at=_when(row["cleared_at"]),
        changed_at=changed_at,
        times_raised=int(row["times_raised"]),
    )
