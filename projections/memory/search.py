"""Similarity search over the memory view.

- PostgreSQL: pgvector. Without filters the query walks the HNSW index (cosine
  distance `<=>`, `hnsw.ef_search` from settings); with a filter (agent, session, time)
  it scans the rows the filter selects exactly, through the btree indexes on agent,
  session and time. pgvector 0.6 filters *after* an HNSW scan, so a selective filter
  could leave fewer than k hits; an exact scan of the selected rows never does.
- SQLite: exact search in numpy. The vectors are loaded once into a matrix and only
  rows added since are read on later searches (`seq` grows); a rebuilt view has a new
  `generation` in `al_memory_meta`, which reloads the matrix.

Scores are cosine similarities (1 is the same direction), best first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from agentledger.domain.memory.embedding import Vectors
from agentledger.domain.memory.recall import MemoryHit
from agentledger.projections.base import PLAIN, Sealer, ViewCursor, iso, view_key
from agentledger.projections.memory.view import Dialect, vector_literal

__all__ = ["MemoryFilter", "MemorySearch"]

Role = Literal["user", "assistant"]


@dataclass(frozen=True, kw_only=True)
class MemoryFilter:
    """Which stored texts a search may return (every given condition must hold)."""

    agent: str | None = None
    session_id: str | None = None
    exclude_session_id: str | None = None
    """Leave out this session's texts (recall from other sessions only)."""
    since: datetime | None = None
    until: datetime | None = None
    role: Role | None = None

    @property
    def empty(self) -> bool:
        return all(
            value is None
            for value in (
                self.agent,
                self.session_id,
                self.exclude_session_id,
                self.since,
                self.until,
                self.role,
            )
        )

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (or "") and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.agent is not None:
            clauses.append("agent = ?")
            params.append(view_key(self.agent))
        if self.session_id is not None:
            clauses.append("session_id = ?")
            params.append(view_key(self.session_id))
        if self.exclude_session_id is not None:
            clauses.append("(session_id IS NULL OR session_id <> ?)")
            params.append(view_key(self.exclude_session_id))
        if self.since is not None:
            clauses.append("at >= ?")
            params.append(iso(self.since))
        if self.until is not None:
            clauses.append("at < ?")
            params.append(iso(self.until))
        if self.role is not None:
            clauses.append("role = ?")
            params.append(self.role)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_META = ("run_id", "task_id", "agent", "session_id", "role", "at", "text")


@dataclass
class _Matrix:
    """The SQLite view's rows in memory (exact search)."""

    generation: str = ""
    last_seq: int = 0
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    meta: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _META})

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    """`meta` as numpy arrays, made on first use after rows were added (filters)."""

    def column(self, name: str) -> np.ndarray:
        found = self.columns.get(name)
        if found is None:
            kind = str if name == "at" else object
            found = self.columns[name] = np.asarray(self.meta[name], dtype=kind)
        return found

    def add(self, rows: list[tuple[Any, ...]], dim: int) -> None:
        if not rows:
            return
        self.columns = {}
        block = np.frombuffer(b"".join(bytes(r[-1]) for r in rows), dtype=np.float32)
        block = block.reshape(len(rows), dim)
        self.vectors = block.copy() if self.vectors.size == 0 else np.vstack([self.vectors, block])
        for index, column in enumerate(_META):
            self.meta[column].extend(r[index + 1] for r in rows)
        self.last_seq = int(rows[-1][0])


class MemorySearch:
    """Searches the memory view of one backend."""

    def __init__(self, dialect: Dialect, sealer: Sealer = PLAIN, ef_search: int = 100) -> None:
        self.dialect: Dialect = dialect
        self.sealer = sealer
        self.ef_search = ef_search
        self._matrix = _Matrix()
        self._lock = threading.Lock()

    def search(
        self, cursor: ViewCursor, query: Vectors, k: int, where: MemoryFilter | None = None
    ) -> list[MemoryHit]:
        """The `k` stored texts most similar to the unit vector `query`, best first."""
        where = where or MemoryFilter()
        if self.dialect == "postgres":
            return self._search_pg(cursor, query, k, where)
        return self._search_numpy(cursor, query, k, where)

    def count(self, cursor: ViewCursor) -> int:
        cursor.execute("SELECT COUNT(*) FROM al_memory")
        row = cursor.fetchone()
        return 0 if row is None else int(row[0])

    # -- PostgreSQL -----------------------------------------------------------------

    def _search_pg(
        self, cursor: ViewCursor, query: Vectors, k: int, where: MemoryFilter
    ) -> list[MemoryHit]:
        clause, params = where.sql()
        literal = vector_literal(query.reshape(-1))
        if where.empty:
            cursor.execute(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), k)}")
            order = "embedding <=> ?::vector"
        else:
            # `+ 0` keeps the planner off the HNSW index: an exact scan of the filtered rows.
            order = "(embedding <=> ?::vector) + 0"
        cursor.execute(
            f"SELECT 1 - (embedding <=> ?::vector), {', '.join(_META)} FROM al_memory{clause}"
            f" ORDER BY {order} LIMIT ?",
            [literal, *params, literal, k],
        )
        return [self._hit(float(row[0]), row[1:]) for row in cursor.fetchall()]

    # -- SQLite ------------------------------------------------------------------------

    def _refresh(self, cursor: ViewCursor) -> _Matrix:
        cursor.execute("SELECT key, value FROM al_memory_meta WHERE key IN ('generation', 'dim')")
        meta = dict(cursor.fetchall())
        generation = str(meta.get("generation", ""))
        with self._lock:
            matrix = self._matrix
            if matrix.generation != generation:
                matrix = _Matrix(generation=generation)
            if generation:
                cursor.execute(
                    f"SELECT seq, {', '.join(_META)}, embedding FROM al_memory"
                    " WHERE seq > ? ORDER BY seq",
                    (matrix.last_seq,),
                )
                matrix.add(cursor.fetchall(), int(meta["dim"]))
            self._matrix = matrix
            return matrix

    def _search_numpy(
        self, cursor: ViewCursor, query: Vectors, k: int, where: MemoryFilter
    ) -> list[MemoryHit]:
        matrix = self._refresh(cursor)
        if matrix.vectors.size == 0:
            return []
        rows = matrix.vectors
        scores = rows @ query.reshape(-1).astype(np.float32)
        if not where.empty:
            mask = self._mask(matrix, where)
            scores = np.where(mask, scores, -np.inf)
        n = int(min(k, int(np.isfinite(scores).sum())))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self._hit(float(scores[i]), tuple(matrix.meta[c][i] for c in _META)) for i in top]

    @staticmethod
    def _mask(matrix: _Matrix, where: MemoryFilter) -> np.ndarray:
        n = matrix.vectors.shape[0]
        mask = np.ones(n, dtype=bool)
        column = matrix.column
        if where.agent is not None:
            mask &= column("agent") == view_key(where.agent)
        if where.session_id is not None:
            mask &= column("session_id") == view_key(where.session_id)
        if where.exclude_session_id is not None:
            mask &= column("session_id") != view_key(where.exclude_session_id)
        if where.role is not None:
            mask &= column("role") == where.role
        if where.since is not None or where.until is not None:
            at = column("at")
            if where.since is not None:
                mask &= at >= iso(where.since)
            if where.until is not None:
                mask &= at < iso(where.until)
        return mask

    def _hit(self, score: float, row: tuple[Any, ...]) -> MemoryHit:
        run_id, task_id, agent, session_id, role, at, text = row
        return MemoryHit(
            score=round(score, 6),
            text=self.sealer.unseal(text),
            role=role,
            run_id=run_id,
            task_id=task_id,
            agent=agent,
            session_id=session_id,
            at=datetime.fromisoformat(at),
        )
