"""The evaluation views: `evaluations` (one row per evaluation: its dataset, label,
progress, aggregate, thresholds and verdict) and its cases (one row per scored case,
with every evaluator's answer). Rebuildable from the `Evaluation` events like every
view; `agentledger eval show|compare|list`, the HTML report and the dashboard read it.

Prompts and outputs are user content: a case's result is sealed like every view's
text (AGENTLEDGER_VIEW_CIPHER_KEY)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentledger.domain.evaluation.evaluation import Evaluation
from agentledger.domain.evaluation.scores import CaseResult, Summary, summarise
from agentledger.projections.base import (
    Projection,
    ViewCursor,
    dumps,
    group_by_aggregate,
    iso,
    loads,
    select_page,
    select_rows,
    upsert_sql,
    view_key,
)

__all__ = [
    "EvaluationView",
    "EvaluationsProjection",
    "evaluation_cases",
    "get_evaluation",
    "list_evaluations",
]

_COLUMNS = (
    "evaluation_id",
    "task_id",
    "dataset",
    "label",
    "agents",
    "status",
    "cases",
    "done",
    "passed",
    "failed",
    "errored",
    "pass_rate",
    "summary",
    "thresholds",
    "breaches",
    "thresholds_met",
    "started_at",
    "finished_at",
    "duration_ms",
    "case_order",
    "version",
)
_CASE_COLUMNS = (
    "evaluation_id",
    "case_name",
    "position",
    "passed",
    "result",
    "scored_at",
)


class EvaluationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    evaluation_id: str
    task_id: str
    dataset: str
    label: str | None
    agents: dict[str, str]
    status: str
    """running or finished."""
    cases: int
    done: int
    passed: int
    failed: int
    errored: int
    pass_rate: float
    summary: Summary
    thresholds: dict[str, Any]
    breaches: list[str]
    thresholds_met: bool | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    results: list[CaseResult] | None = None
    """The scored cases, in the dataset's order (with `get_evaluation`)."""


class EvaluationsProjection(Projection):
    name: ClassVar[str] = "evaluations"
    tables: ClassVar[tuple[str, ...]] = ("al_evaluations", "al_evaluation_cases")
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS al_evaluations ("
        " evaluation_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, dataset TEXT NOT NULL,"
        " label TEXT, agents TEXT NOT NULL, status TEXT NOT NULL, cases INTEGER NOT NULL,"
        " done INTEGER NOT NULL, passed INTEGER NOT NULL, failed INTEGER NOT NULL,"
        " errored INTEGER NOT NULL, pass_rate DOUBLE PRECISION NOT NULL, summary TEXT NOT NULL,"
        " thresholds TEXT NOT NULL, breaches TEXT NOT NULL, thresholds_met INTEGER,"
        " started_at TEXT NOT NULL, finished_at TEXT, duration_ms DOUBLE PRECISION,"
        " case_order TEXT NOT NULL, version BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS al_evaluations_task ON al_evaluations (task_id)",
        "CREATE INDEX IF NOT EXISTS al_evaluations_dataset ON al_evaluations (dataset, started_at)",
        "CREATE TABLE IF NOT EXISTS al_evaluation_cases ("
        " evaluation_id TEXT NOT NULL, case_name TEXT NOT NULL, position INTEGER NOT NULL,"
        " passed INTEGER NOT NULL, result TEXT NOT NULL, scored_at TEXT NOT NULL,"
        " PRIMARY KEY (evaluation_id, case_name))",
    )

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch([event], cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        groups = group_by_aggregate(events, Evaluation.Event)
        if not groups:
            return
        rows = select_rows(cursor, "al_evaluations", _COLUMNS, groups)
        touched: dict[str, dict[str, Any]] = {}
        case_rows: list[tuple[Any, ...]] = []
        positions: dict[str, dict[str, int]] = {}
        for key, group in groups.items():
            row = rows.get(key)
            for event in group:
                if row is not None and event.originator_version <= row["version"]:
                    continue
                if isinstance(event, Evaluation.EvaluationStarted):
                    names = [c["name"] for c in event.cases]
                    row = {
                        "evaluation_id": key,
                        "task_id": view_key(event.task_id),
                        "dataset": event.dataset,
                        "label": event.label,
                        "agents": dumps(event.agents),
                        "status": "running",
                        "cases": len(event.cases),
                        "done": 0,
                        "passed": 0,
                        "failed": 0,
                        "errored": 0,
                        "pass_rate": 0.0,
                        "summary": dumps(
                            summarise([], cases=len(event.cases)).model_dump(mode="json")
                        ),
                        "thresholds": dumps(event.thresholds),
                        "breaches": "[]",
                        "thresholds_met": None,
                        "started_at": iso(event.timestamp),
                        "finished_at": None,
                        "duration_ms": None,
                        "case_order": dumps(names),
                        "version": event.originator_version,
                    }
                elif row is not None and isinstance(event, Evaluation.CaseScored):
                    result = CaseResult.model_validate(event.result)
                    if key not in positions:  # once per evaluation and batch
                        positions[key] = {n: i for i, n in enumerate(loads(row["case_order"]))}
                    order = positions[key]
                    case_rows.append(
                        (
                            key,
                            view_key(result.case),
                            order.get(result.case, len(order)),
                            int(result.passed),
                            self.sealer.seal(dumps(result.model_dump(mode="json"))),
                            iso(event.timestamp),
                        )
                    )
                    row = {
                        **row,
                        "done": row["done"] + 1,
                        "passed": row["passed"] + int(result.passed),
                        "errored": row["errored"] + int(result.errored),
                        "failed": row["failed"] + int(not result.passed and not result.errored),
                        "version": event.originator_version,
                    }
                    row["pass_rate"] = row["passed"] / row["cases"] if row["cases"] else 0.0
                elif row is not None and isinstance(event, Evaluation.EvaluationFinished):
                    row = {
                        **row,
                        "status": "finished",
                        "summary": dumps(event.summary),
                        "breaches": dumps(event.breaches),
                        "thresholds_met": int(event.passed),
                        "finished_at": iso(event.timestamp),
                        "duration_ms": event.duration_ms,
                        "version": event.originator_version,
                    }
                if row is not None:
                    touched[key] = row
        if case_rows:
            cursor.executemany(
                upsert_sql("al_evaluation_cases", _CASE_COLUMNS, ("evaluation_id", "case_name")),
                case_rows,
            )
        if touched:
            cursor.executemany(
                upsert_sql("al_evaluations", _COLUMNS, ("evaluation_id",)),
                [tuple(row[c] for c in _COLUMNS) for row in touched.values()],
            )


def _view(row: dict[str, Any]) -> EvaluationView:
    return EvaluationView(
        evaluation_id=row["evaluation_id"],
        task_id=row["task_id"],
        dataset=row["dataset"],
        label=row["label"],
        agents=loads(row["agents"]),
        status=row["status"],
        cases=row["cases"],
        done=row["done"],
        passed=row["passed"],
        failed=row["failed"],
        errored=row["errored"],
        pass_rate=row["pass_rate"],
        summary=Summary.model_validate(loads(row["summary"])),
        thresholds=loads(row["thresholds"]),
        breaches=loads(row["breaches"]),
        thresholds_met=None if row["thresholds_met"] is None else bool(row["thresholds_met"]),
        started_at=datetime.fromisoformat(row["started_at"]),
        finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None,
        duration_ms=row["duration_ms"],
    )


def list_evaluations(
    cursor: ViewCursor,
    *,
    dataset: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[EvaluationView]:
    """Newest first."""
    rows = select_page(
        cursor,
        f"SELECT {', '.join(_COLUMNS)} FROM al_evaluations",
        [("dataset", dataset), ("status", status)],
        order_by="started_at DESC, evaluation_id",
        limit=limit,
        offset=offset,
        query="evaluations",
    )
    return [_view(dict(zip(_COLUMNS, values, strict=True))) for values in rows]


def get_evaluation(
    cursor: ViewCursor,
    *,
    evaluation_id: str | None = None,
    task_id: str | None = None,
    sealer: Any = None,
) -> EvaluationView | None:
    """One evaluation with its scored cases, by id or task id."""
    select = f"SELECT {', '.join(_COLUMNS)} FROM al_evaluations"
    if evaluation_id is not None:
        cursor.execute(f"{select} WHERE evaluation_id = ?", (evaluation_id,))
    else:
        cursor.execute(
            f"{select} WHERE task_id = ? ORDER BY started_at DESC LIMIT 1", (task_id or "",)
        )
    values = cursor.fetchone()
    if values is None:
        return None
    view = _view(dict(zip(_COLUMNS, values, strict=True)))
    return view.model_copy(
        update={"results": evaluation_cases(cursor, view.evaluation_id, sealer=sealer)}
    )


def evaluation_cases(
    cursor: ViewCursor, evaluation_id: str, *, sealer: Any = None
) -> list[CaseResult]:
    cursor.execute(
        "SELECT result FROM al_evaluation_cases WHERE evaluation_id = ? ORDER BY position,"
        " case_name",
        (evaluation_id,),
    )
    out = []
    for (text,) in cursor.fetchall():
        opened = sealer.unseal(text) if sealer is not None else text
        out.append(CaseResult.model_validate(loads(opened)))
    return out
