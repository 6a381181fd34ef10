"""The projection port: what a read model is, and the cursor it writes through.

SQL in projections is written once for both backends: `?` placeholders (the
PostgreSQL adapter converts them), `INSERT ... ON CONFLICT (...) DO UPDATE SET
col = excluded.col`, the types TEXT / BIGINT / DOUBLE PRECISION / INTEGER, JSON as TEXT,
and timestamps as fixed-width ISO 8601 UTC strings so both backends order them alike.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

__all__ = ["Projection", "ProjectionError", "ViewCursor", "dumps", "iso", "loads"]


class ViewCursor(Protocol):
    """A DB-API-like cursor inside one view-store transaction."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


class ProjectionError(Exception):
    """An event could not be applied: the log and the view disagree (a bug, not input)."""


class Projection(ABC):
    """A read model: tables, and how each event changes them.

    The projector calls `apply` for every event of the log, in log order, inside the
    transaction that also records the projection's tracking position; `apply` ignores the
    events it does not care about. Each `apply` also guards itself by the aggregate
    version it last applied, so re-applying an event is harmless, but exactly-once rests
    on the tracking record.
    """

    name: ClassVar[str]
    """Stable name: the tracking key, and what `agentledger rebuild <name>` takes."""
    ddl: ClassVar[tuple[str, ...]]
    """`CREATE TABLE IF NOT EXISTS` / `CREATE INDEX IF NOT EXISTS` statements."""
    tables: ClassVar[tuple[str, ...]]
    """The tables `ddl` creates, dropped when the view is rebuilt."""

    @abstractmethod
    def apply(self, event: object, cursor: ViewCursor) -> None:
        """Fold one domain event into the view."""


def iso(timestamp: datetime) -> str:
    """Fixed-width ISO 8601 in UTC (microseconds always present), so text order is time
    order on both backends."""
    return timestamp.astimezone(UTC).isoformat(timespec="microseconds")


def dumps(value: Any) -> str:
    """JSON text of a JSON-compatible value, as stored in TEXT columns."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    """The value of a JSON TEXT column (None stays None)."""
    return None if text is None else json.loads(text)
