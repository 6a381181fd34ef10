"""The archive log: which runs were archived to which file (beside the views).

Archived runs keep their rows in the views (projections are not touched by archiving);
this table is what tells an archived run from a live one, and where it went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentledger.infra.view_store import ViewStore

__all__ = ["ArchiveCandidate", "ArchiveLog"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS al_archived ("
    "run_id TEXT PRIMARY KEY, task_id TEXT, archive_file TEXT NOT NULL, archived_at TEXT NOT NULL)"
)


@dataclass(frozen=True, kw_only=True)
class ArchiveCandidate:
    run_id: str
    task_id: str | None
    session_id: str | None
    finished_at: str


class ArchiveLog:
    """Reads finished runs from the runs view and records what was archived."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views
        with views.transaction() as cursor:
            cursor.execute(_DDL)

    def candidates(self, finished_before: str, limit: int) -> list[ArchiveCandidate]:
        """Completed or failed runs that finished before `finished_before` (ISO 8601,
        UTC) and are not archived yet, oldest first."""
        with self.views.read() as cursor:
            cursor.execute(
                "SELECT r.run_id, r.task_id, r.session_id, r.finished_at FROM al_runs r"
                " LEFT JOIN al_archived a ON a.run_id = r.run_id"
                " WHERE a.run_id IS NULL AND r.status IN ('completed', 'failed')"
                " AND r.finished_at < ? ORDER BY r.finished_at, r.run_id LIMIT ?",
                (finished_before, limit),
            )
            rows = cursor.fetchall()
        return [
            ArchiveCandidate(run_id=r[0], task_id=r[1], session_id=r[2], finished_at=r[3])
            for r in rows
        ]

    def mark(self, runs: Sequence[tuple[str, str | None]], archive_file: str, at: str) -> None:
        with self.views.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO al_archived (run_id, task_id, archive_file, archived_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                [(run_id, task_id, archive_file, at) for run_id, task_id in runs],
            )

    def where(self, run_id: str) -> str | None:
        """The archive file holding this run, if it was archived."""
        with self.views.read() as cursor:
            cursor.execute("SELECT archive_file FROM al_archived WHERE run_id = ?", (run_id,))
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def count(self) -> int:
        with self.views.read() as cursor:
            cursor.execute("SELECT COUNT(*) FROM al_archived")
            row = cursor.fetchone()
        return int(row[0]) if row else 0
