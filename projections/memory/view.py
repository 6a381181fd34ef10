"""The memory view: every user prompt and every final output, embedded once.

One row per (run, role): `user` holds the run's prompt (from `RunRequested`), `assistant`
its final output (from `RunCompleted`; a structured output is kept as its JSON text),
with the run's session, agent, task and time. Empty texts are not kept.

Each batch the projector hands over is embedded in one call (the embedder batches
inside), in the projector's own thread: never on an event loop. The memory view runs in
a projector of its own (`agentledger.handlers.memory`), so a slow embedder never holds
back the other views.

Backends (`dialect`):
- PostgreSQL: a pgvector `vector(dim)` column with an HNSW index (cosine,
  `vector_cosine_ops`); `m` and `ef_construction` come from settings (`HnswParams`).
- SQLite (the embedded default): float32 bytes in a BLOB; searches are exact, in numpy
  (`agentledger.projections.memory.search`).

The view records which embedder made it, and the index parameters, in `al_memory_meta`.
When either differs from the configured ones, `stale_reason` says so and the view store
drops the view, which the projector then folds again from the log (a rebuild).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from agentledger.domain.memory.embedding import Embedder, Vectors
from agentledger.domain.run import AgentRun
from agentledger.projections.base import (
    PLAIN,
    Projection,
    Sealer,
    ViewCursor,
    dumps,
    iso,
    optional_key,
    view_key,
    without_nul,
)

__all__ = ["Dialect", "HnswParams", "MemoryProjection", "vector_literal"]

Dialect = Literal["sqlite", "postgres"]

COLUMNS = ("id", "run_id", "task_id", "agent", "session_id", "role", "at", "text", "embedding")
"""The columns a row is written with (`seq` is drawn by the database)."""


@dataclass(frozen=True)
class HnswParams:
    """pgvector HNSW build parameters (see pgvector's README)."""

    m: int = 16
    ef_construction: int = 64


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """A vector as pgvector's text input, `[x,y,...]`."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def _storable(text: str) -> str:
    """Text any backend and tokenizer accepts: no NUL, no lone surrogate."""
    return without_nul(text).encode("utf-8", "replace").decode("utf-8")


def output_text(output: Any) -> str:
    """The text kept for a run's final output: a string as it is, else its JSON."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return dumps(output)


class MemoryProjection(Projection):
    """The `memory` view: embedded prompts and outputs for similarity search."""

    name: ClassVar[str] = "memory"
    tables: ClassVar[tuple[str, ...]] = ("al_memory", "al_memory_meta")
    version: ClassVar[int] = 1
    ddl: ClassVar[tuple[str, ...]] = ()
    """Set per instance: the vector column's size is the embedder's."""

    def __init__(
        self,
        embedder: Embedder,
        dialect: Dialect,
        sealer: Sealer = PLAIN,
        hnsw: HnswParams | None = None,
    ) -> None:
        super().__init__(sealer)
        self.embedder = embedder
        self.dialect: Dialect = dialect
        self.hnsw = hnsw or HnswParams()
        self.ddl = self._ddl()  # type: ignore[misc]  # depends on the embedder's dim
        self.deferred_ddl = self._deferred_ddl()  # type: ignore[misc]
        self._meta = {
            "embedder": embedder.name,
            "dim": str(embedder.dim),
            "index": (
                f"hnsw m={self.hnsw.m} ef_construction={self.hnsw.ef_construction}"
                if dialect == "postgres"
                else "exact"
            ),
        }

    def _ddl(self) -> tuple[str, ...]:
        meta = (
            "CREATE TABLE IF NOT EXISTS al_memory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        common = (
            "id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL, task_id TEXT NOT NULL,"
            " agent TEXT NOT NULL, session_id TEXT, role TEXT NOT NULL, at TEXT NOT NULL,"
            " text TEXT NOT NULL"
        )
        indexes = (
            "CREATE INDEX IF NOT EXISTS al_memory_agent ON al_memory (agent, at)",
            "CREATE INDEX IF NOT EXISTS al_memory_session ON al_memory (session_id, at)",
            "CREATE INDEX IF NOT EXISTS al_memory_at ON al_memory (at)",
        )
        if self.dialect == "sqlite":
            return (
                f"CREATE TABLE IF NOT EXISTS al_memory (seq INTEGER PRIMARY KEY, {common},"
                " embedding BLOB NOT NULL)",
                meta,
                *indexes,
            )
        return (
            "CREATE EXTENSION IF NOT EXISTS vector",
            f"CREATE TABLE IF NOT EXISTS al_memory (seq BIGSERIAL PRIMARY KEY, {common},"
            f" embedding vector({self.embedder.dim}) NOT NULL)",
            meta,
            *indexes,
        )

    def _deferred_ddl(self) -> tuple[str, ...]:
        """The HNSW index: inserts into an indexed table run at ~1,000 rows/s, while
        building it over 100,000 rows takes ~17 s (BENCHMARKS.md), so `rebuild memory`
        builds it after folding."""
        if self.dialect == "sqlite":
            return ()
        return (
            "CREATE INDEX IF NOT EXISTS al_memory_hnsw ON al_memory"
            " USING hnsw (embedding vector_cosine_ops)"
            f" WITH (m = {int(self.hnsw.m)}, ef_construction = {int(self.hnsw.ef_construction)})",
        )

    # -- staleness -------------------------------------------------------------------

    def stale_reason(self, cursor: ViewCursor) -> str | None:
        """Why the stored view cannot be kept (another embedder or index made it), or
        None. Called by the view store before it (re)creates the tables."""
        if self.dialect == "sqlite":
            cursor.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'al_memory_meta'"
            )
        else:
            cursor.execute("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'al_memory_meta'")
        row = cursor.fetchone()
        if row is None or not row[0]:
            return None
        cursor.execute("SELECT key, value FROM al_memory_meta")
        stored = {str(k): str(v) for k, v in cursor.fetchall()}
        for key, wanted in self._meta.items():
            if key in stored and stored[key] != wanted:
                return f"the view was made with {key} {stored[key]!r}, configured: {wanted!r}"
        return None

    def made_by(self) -> dict[str, str]:
        """What this projection records about how it makes the view."""
        return dict(self._meta)

    # -- folding ----------------------------------------------------------------------

    def apply(self, event: object, cursor: ViewCursor) -> None:
        self.apply_batch([event], cursor)

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        prompts: list[AgentRun.RunRequested] = []
        completions: list[AgentRun.RunCompleted] = []
        for event in events:
            if isinstance(event, AgentRun.RunRequested):
                prompts.append(event)
            elif isinstance(event, AgentRun.RunCompleted):
                completions.append(event)
        if not prompts and not completions:
            return
        self._write_meta(cursor)
        rows: list[dict[str, Any]] = []
        runs: dict[str, dict[str, Any]] = {}
        for requested in prompts:
            run: dict[str, Any] = {
                "run_id": str(requested.originator_id),
                "task_id": view_key(requested.task_id),
                "agent": view_key(requested.agent),
                "session_id": optional_key(requested.session_id),
            }
            runs[run["run_id"]] = run
            if requested.parent_run_id is not None and requested.fork_prompt is None:
                continue  # a fork that continues its parent: the prompt is the parent's
            text = _storable(requested.fork_prompt or requested.prompt)
            if text.strip():
                rows.append({**run, "role": "user", "at": iso(requested.timestamp), "text": text})
        missing = {str(c.originator_id) for c in completions} - runs.keys()
        if missing:
            runs.update(self._known_runs(cursor, missing))
        for completed in completions:
            found = runs.get(str(completed.originator_id))
            if found is None:
                continue  # the run's request is gone from the log (archived): no context
            text = _storable(output_text(completed.output))
            if text.strip():
                rows.append(
                    {**found, "role": "assistant", "at": iso(completed.timestamp), "text": text}
                )
        if not rows:
            return
        vectors = self.embedder.embed([row["text"] for row in rows])
        self._insert(cursor, rows, vectors)

    def _write_meta(self, cursor: ViewCursor) -> None:
        meta = {**self._meta, "generation": uuid.uuid4().hex}
        cursor.executemany(
            "INSERT INTO al_memory_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            list(meta.items()),
        )

    def _known_runs(self, cursor: ViewCursor, run_ids: set[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(run_ids)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            cursor.execute(
                "SELECT run_id, task_id, agent, session_id FROM al_memory"
                f" WHERE role = 'user' AND run_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for run_id, task_id, agent, session_id in cursor.fetchall():
                found[run_id] = {
                    "run_id": run_id,
                    "task_id": task_id,
                    "agent": agent,
                    "session_id": session_id,
                }
        return found

    def _insert(self, cursor: ViewCursor, rows: list[dict[str, Any]], vectors: Vectors) -> None:
        placeholder = "?" if self.dialect == "sqlite" else "?::vector"
        sql = (
            f"INSERT INTO al_memory ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join('?' * (len(COLUMNS) - 1))}, {placeholder})"
            " ON CONFLICT (id) DO NOTHING"
        )
        params = []
        for row, vector in zip(rows, vectors, strict=True):
            stored: Any = (
                np.asarray(vector, dtype=np.float32).tobytes()
                if self.dialect == "sqlite"
                else vector_literal(vector)
            )
            params.append(
                (
                    f"{row['run_id']}:{row['role']}",
                    row["run_id"],
                    row["task_id"],
                    row["agent"],
                    row["session_id"],
                    row["role"],
                    row["at"],
                    self.sealer.seal(row["text"]),
                    stored,
                )
            )
        cursor.executemany(sql, params)
