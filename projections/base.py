"""The projection port: what a read model is, and the cursor it writes through.

SQL in projections is written once for both backends: `?` placeholders (the
PostgreSQL adapter converts them), `INSERT ... ON CONFLICT (...) DO UPDATE SET
col = excluded.col`, the types TEXT / BIGINT / DOUBLE PRECISION / INTEGER, JSON as TEXT,
and timestamps as fixed-width ISO 8601 UTC strings so both backends order them alike.

The projector hands a projection a whole batch of events at once (`apply_batch`). The
views fold a batch in memory: they read the rows the batch touches in one SELECT, apply
every event to them in log order (with the same per-version guard as one at a time) and
write each touched row once, so a batch costs a few statements whatever its size. On
PostgreSQL every statement is a round trip to another process; on SQLite it is a call.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

__all__ = [
    "KEY_CHARS",
    "NUL_REPLACEMENT",
    "PLAIN",
    "PlainText",
    "Projection",
    "ProjectionError",
    "Sealer",
    "ViewCursor",
    "check_page",
    "dumps",
    "group_by_aggregate",
    "iso",
    "loads",
    "optional_key",
    "select_by_run_or_task",
    "select_page",
    "select_rows",
    "upsert_sql",
    "view_key",
    "without_nul",
]

_IN_CHUNK = 500
"""Keys per `IN (...)` list: far below SQLite's and PostgreSQL's parameter limits."""

NUL_REPLACEMENT = "\ufffd"
"""What a NUL character in view text becomes (PostgreSQL `text` cannot hold NUL)."""
KEY_CHARS = 200
"""The longest text a view keeps in a key or indexed column (agent, task and session
ids): as long as the task contract allows ids, and far below PostgreSQL's index-row limit."""
_KEY_KEPT = KEY_CHARS - 40
"""Characters of an over-long key kept before the marker that ends it."""


class Sealer(Protocol):
    """Seals sensitive text columns (prompts, outputs, transcripts) at rest."""

    def seal(self, text: str) -> str: ...

    def unseal(self, text: str) -> str: ...


class PlainText:
    """The identity sealer: views stored as they are (no cipher key configured)."""

    def seal(self, text: str) -> str:
        return text

    def unseal(self, text: str) -> str:
        return text


PLAIN: Sealer = PlainText()


class ViewCursor(Protocol):
    """A DB-API-like cursor inside one view-store transaction."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


class ProjectionError(Exception):
    """An event could not be applied: the log and the view disagree (a bug, not input)."""


class Projection(ABC):
    """A read model: tables, and how each event changes them.

    The projector calls `apply_batch` with the log's events in log order, a batch at a
    time, inside the transaction that also records the projection's tracking position;
    events it does not care about are ignored. Applying a batch must leave the view as
    applying its events one by one with `apply` would. Each row also guards itself by the
    aggregate version it last applied, so re-applying an event is harmless, but
    exactly-once rests on the tracking record.
    """

    name: ClassVar[str]
    """Stable name: the tracking key, and what `agentledger rebuild <name>` takes."""
    ddl: ClassVar[tuple[str, ...]]
    """`CREATE TABLE IF NOT EXISTS` / `CREATE INDEX IF NOT EXISTS` statements."""
    tables: ClassVar[tuple[str, ...]]
    """The tables `ddl` creates, dropped when the view is rebuilt."""
    deferred_ddl: ClassVar[tuple[str, ...]] = ()
    """Indexes that cost more to keep up row by row than to build at once (pgvector's
    HNSW): made with the tables, but a rebuild makes them after folding the log."""
    version: ClassVar[int] = 1
    """The shape of the view's tables and what they mean. Bump it when either changes:
    the view store drops a view kept at another version and the projector folds it
    again from the log (see `ViewStore.ensure`)."""

    def __init__(self, sealer: Sealer = PLAIN) -> None:
        self.sealer = sealer
        """Seals the sensitive columns this view writes (see `Sealer`)."""

    def stale_reason(self, cursor: ViewCursor) -> str | None:
        """Why the stored tables cannot be kept although their `version` matches (e.g.
        another embedder made them), or None. The view store drops a stale view, and the
        projector folds it again."""
        return None

    @abstractmethod
    def apply(self, event: object, cursor: ViewCursor) -> None:
        """Fold one domain event into the view."""

    def apply_batch(self, events: Sequence[object], cursor: ViewCursor) -> None:
        """Fold a batch of domain events (in log order) into the view: by default one
        `apply` each; views override it to write each touched row once."""
        for event in events:
            self.apply(event, cursor)


def group_by_aggregate(
    events: Iterable[object], types: type[Any] | tuple[type[Any], ...]
) -> dict[str, list[Any]]:
    """The events of the given types by originator id (as text), in log order within
    each aggregate; aggregates in the order they first appear."""
    groups: dict[str, list[Any]] = {}
    for event in events:
        if isinstance(event, types):
            groups.setdefault(str(event.originator_id), []).append(event)
    return groups


def select_rows(
    cursor: ViewCursor, table: str, columns: Sequence[str], keys: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The rows of `table` whose first column (`columns[0]`, its key) is in `keys`, as
    column -> value dicts by key; one SELECT per 500 keys."""
    wanted = list(dict.fromkeys(keys))
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        cursor.execute(
            f"SELECT {', '.join(columns)} FROM {table}"
            f" WHERE {columns[0]} IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for row in cursor.fetchall():
            rows[row[0]] = dict(zip(columns, row, strict=True))
    return rows


def check_page(query: str, limit: int, offset: int) -> None:
    """Refuse a page that cannot exist, naming the query: `limit` >= 1, `offset` >= 0."""
    if limit < 1 or offset < 0:
        raise ValueError(f"{query} needs limit >= 1 and offset >= 0, got {limit}, {offset}")


def select_page(
    cursor: ViewCursor,
    select: str,
    filters: Iterable[tuple[str, Any]],
    *,
    order_by: str,
    limit: int,
    offset: int,
    query: str,
) -> list[tuple[Any, ...]]:
    """One page of `select` (a `SELECT ... FROM table`) where every filter whose value is
    not None holds (`column = value`), in `order_by` order: the shape of every list query."""
    check_page(query, limit, offset)
    given = [(column, value) for column, value in filters if value is not None]
    where = f" WHERE {' AND '.join(f'{c} = ?' for c, _ in given)}" if given else ""
    cursor.execute(
        f"{select}{where} ORDER BY {order_by} LIMIT ? OFFSET ?",
        (*(value for _, value in given), limit, offset),
    )
    return list(cursor.fetchall())


def select_by_run_or_task(
    cursor: ViewCursor,
    select: str,
    *,
    run_id: str | None,
    task_id: str | None,
    newest: str,
    query: str,
) -> tuple[Any, ...] | None:
    """The row of `select` with this run id, or else the newest (by the `newest` column)
    with this task id (a task's later runs, e.g. a retry after retention, win)."""
    if run_id is not None:
        cursor.execute(f"{select} WHERE run_id = ?", (run_id,))
    elif task_id is not None:
        cursor.execute(
            f"{select} WHERE task_id = ? ORDER BY {newest} DESC LIMIT 1", (view_key(task_id),)
        )
    else:
        raise ValueError(f"{query} needs run_id or task_id")
    row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """`INSERT` of whole rows that replaces every other column of a row with the same
    `key` (the columns of a primary key or unique constraint)."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    )


def without_nul(text: str) -> str:
    """`text` with every NUL character replaced by U+FFFD: the policy for all text a view
    holds (the view store applies it to every string it writes; JSON columns keep a NUL
    anyway, escaped as `\\u0000`)."""
    return text.replace("\x00", NUL_REPLACEMENT) if "\x00" in text else text


def view_key(value: str) -> str:
    """`value` as a view keeps it in a key or an indexed column: without NUL, and cut to
    `KEY_CHARS` characters when longer, ending in a marker with the original length and a
    digest (so two long values stay apart, and a rebuild gives the same key). Recorded
    events are untouched: only the view's copy is bounded."""
    value = without_nul(value)
    if len(value) <= KEY_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{value[:_KEY_KEPT]}…[{len(value)} chars, {digest}]"


def optional_key(value: str | None) -> str | None:
    """`view_key` of a value that may be missing."""
    return None if value is None else view_key(value)


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
