"""The route_decisions view: one row per route task (what was chosen, how sure, the
operator's verdict), rebuildable from the `RouteDecision` events like every view.
`agentledger route fit` learns from the rows with feedback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.routing.decision import RouteDecision
from agentledger.projections.base import (
    Projection,
    ViewCursor,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = ["RouteDecisionView", "RouteDecisionsProjection", "list_route_decisions"]

_COLUMNS = (
    "decision_id",
    "task_id",
    "prompt",
    "chosen",
    "target",
    "fallback",
    "score",
    "scores",
    "method",
    "embedder",
    "run_id",
    "decided_at",
    "feedback_correct",
    "feedback_expected",
    "feedback_at",
    "version",
)


class RouteDecisionView(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision_id: str
    task_id: str
    prompt: str
    chosen: str | None
    target: str | None
    fallback: bool
    score: float | None
    scores: dict[str, float]
    method: str
    embedder: str
    run_id: str | None
    decided_at: datetime
    feedback_correct: bool | None
    feedback_expected: str | None
    """The right route per the feedback (None with feedback: no route was right)."""
    feedback_at: datetime | None


class RouteDecisionsProjection(Projection):
    name: ClassVar[str] = "route_decisions"
    tables: ClassVar[tuple[str, ...]] = ("al_route_decisions",)
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS al_route_decisions ("
        " decision_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, prompt TEXT NOT NULL,"
        " chosen TEXT, target TEXT, fallback INTEGER NOT NULL, score DOUBLE PRECISION,"
        " scores TEXT NOT NULL, method TEXT NOT NULL, embedder TEXT NOT NULL, run_id TEXT,"
        " decided_at TEXT NOT NULL, feedback_correct INTEGER, feedback_expected TEXT,"
        " feedback_at TEXT, version BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS al_route_decisions_task ON al_route_decisions (task_id)",
        "CREATE INDEX IF NOT EXISTS al_route_decisions_at ON al_route_decisions (decided_at)",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch([event], cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        groups = group_by_aggregate(events, RouteDecision.Event)
        if not groups:
            return
        rows = select_rows(cursor, "al_route_decisions", _COLUMNS, groups)
        touched: dict[str, dict[str, Any]] = {}
        for key, group in groups.items():
            row = rows.get(key)
            for event in group:
                if row is not None and event.originator_version <= row["version"]:
                    continue
                if isinstance(event, RouteDecision.RouteDecided):
                    row = {
                        "decision_id": key,
                        "task_id": view_key(event.task_id),
                        "prompt": self.sealer.seal(event.prompt),
                        "chosen": event.chosen,
                        "target": event.target,
                        "fallback": int(event.fallback),
                        "score": event.scores.get(event.chosen) if event.chosen else None,
                        "scores": dumps(event.scores),
                        "method": event.method,
                        "embedder": event.embedder,
                        "run_id": event.run_id,
                        "decided_at": iso(event.timestamp),
                        "feedback_correct": None,
                        "feedback_expected": None,
                        "feedback_at": None,
                        "version": event.originator_version,
                    }
                elif row is not None and isinstance(event, RouteDecision.RouteFeedbackGiven):
                    row = {
                        **row,
                        "feedback_correct": int(event.correct),
                        "feedback_expected": event.expected,
                        "feedback_at": iso(event.timestamp),
                        "version": event.originator_version,
                    }
                if row is not None:
                    touched[key] = row
        if touched:
            cursor.executemany(
                upsert_sql("al_route_decisions", _COLUMNS, ("decision_id",)),
                [tuple(row[c] for c in _COLUMNS) for row in touched.values()],
            )


def list_route_decisions(
    cursor: ViewCursor,
    *,
    with_feedback: bool = False,
    limit: int = 50,
    offset: int = 0,
    sealer: Any = None,
) -> list[RouteDecisionView]:
    where = " WHERE feedback_correct IS NOT NULL" if with_feedback else ""
    cursor.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM al_route_decisions{where}"
        " ORDER BY decided_at DESC, decision_id LIMIT ? OFFSET ?",
        (limit, offset),
    )
    out = []
    for values in cursor.fetchall():
        row = dict(zip(_COLUMNS, values, strict=True))
        out.append(
            RouteDecisionView(
                decision_id=row["decision_id"],
                task_id=row["task_id"],
                prompt=sealer.unseal(row["prompt"]) if sealer is not None else row["prompt"],
                chosen=row["chosen"],
                target=row["target"],
                fallback=bool(row["fallback"]),
                score=row["score"],
                scores=loads(row["scores"]),
                method=row["method"],
                embedder=row["embedder"],
                run_id=row["run_id"],
                decided_at=datetime.fromisoformat(row["decided_at"]),
                feedback_correct=None
                if row["feedback_correct"] is None
                else bool(row["feedback_correct"]),
                feedback_expected=row["feedback_expected"],
                feedback_at=datetime.fromisoformat(row["feedback_at"])
                if row["feedback_at"]
                else None,
            )
        )
    return out
