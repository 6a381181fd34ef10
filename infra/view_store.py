"""The view store: where projections keep their read models and tracking records.

SQLite keeps the views in their own file (WAL, so queries never wait for the projector);
PostgreSQL keeps them in the events' database under the `al_` prefix. Both hand out a
`ViewCursor` inside one transaction, so a projection's rows and its tracking record
commit together. Driver connection errors become `StoreUnavailable`.

On PostgreSQL a write transaction runs in psycopg's pipeline mode: statements are sent
without waiting for each other's results, and only a fetch (a SELECT whose rows the
caller reads) or the end of the transaction waits for the server. A projector batch
therefore costs a handful of round trips, not one per statement. An error of a
pipelined statement surfaces at the next fetch or at the end of the block; either way
the whole transaction is rolled back.

Text never holds a NUL character: PostgreSQL `text` cannot, so both backends write every
string parameter with NUL replaced by U+FFFD (`agentledger.projections.base.without_nul`);
the event store keeps the original. Only errors of reaching or holding the database
(a lost connection, a restart, a deadlock, a full disk) are `StoreUnavailable`; an error
about what was written (a value too large for an index, a constraint) is raised as it
is, and `is_schema_error` tells the ones about the views' own SQL or tables apart.

Each view's tables are kept at its projection's `version`: `ensure` drops the tables of a
view stored at another version (and its tracking row), so the projector folds it again
from the log with the new shape.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
import structlog
from psycopg import sql

from agentledger.infra.event_store import StoreUnavailable, unreachable_postgres
from agentledger.infra.settings import Settings
from agentledger.infra.view_cipher import AesSealer
from agentledger.projections.base import PLAIN, Projection, Sealer, ViewCursor, without_nul

__all__ = [
    "CommitSignal",
    "PostgresViewStore",
    "SQLiteViewStore",
    "ViewStore",
    "is_schema_error",
    "view_store_for",
]

log = structlog.get_logger("agentledger.views")


class CommitSignal(Protocol):
    """Wakes a waiter when new events may have been committed."""

    @property
    def listening(self) -> bool:
        """True while notifications are being received (so waits may be long)."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives since the last `clear` (True) or `timeout`
        seconds pass (False)."""
        ...

    def clear(self) -> None:
        """Forget notifications received so far (call before looking for new events)."""
        ...

    def close(self) -> None:
        """Stop listening and release the connection."""
        ...


_TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS al_tracking ("
    "projection TEXT PRIMARY KEY, notification_id BIGINT NOT NULL)"
)
_SELECT_TRACKING = "SELECT notification_id FROM al_tracking WHERE projection = ?"
_SELECT_TRACKINGS = "SELECT projection, notification_id FROM al_tracking WHERE projection IN"
_SET_TRACKING = (
    "INSERT INTO al_tracking (projection, notification_id) VALUES (?, ?)"
    " ON CONFLICT (projection) DO UPDATE SET notification_id = excluded.notification_id"
)
_VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS al_view_versions ("
    "projection TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


def _clean(params: Sequence[Any]) -> tuple[Any, ...]:
    """The parameters with NUL characters replaced in every string (see the module
    docstring); the same tuple when there is none, the common case."""
    values = tuple(params)
    for value in values:
        if type(value) is str and "\x00" in value:
            return tuple(without_nul(v) if type(v) is str else v for v in values)
    return values


def is_schema_error(error: BaseException) -> bool:
    """Whether a view-store error is about the views' SQL or tables (a table or column
    missing, a syntax error, no privilege) rather than the values written: such an error
    fails every event alike, so it is never taken for a poison event."""
    if isinstance(error, psycopg.Error):
        return isinstance(
            error,
            psycopg.ProgrammingError
            | psycopg.NotSupportedError
            | psycopg.InternalError
            | psycopg.InterfaceError,
        )
    if isinstance(error, sqlite3.Error):
        return isinstance(
            error,
            sqlite3.OperationalError
            | sqlite3.ProgrammingError
            | sqlite3.NotSupportedError
            | sqlite3.InternalError,
        )
    return False


class ViewStore(ABC):
    """Transactions over the views, and the tracking records that make them exactly-once."""

    _row_lock = ""
    """What makes a SELECT of the tracking row hold it until commit (PostgreSQL)."""
    sees_event_writers = False
    """Whether `event_writers` can tell which transactions are inserting events."""

    sealer: Sealer = PLAIN
    """Seals sensitive view columns; an `AesSealer` when a cipher key is configured."""

    def __init__(self) -> None:
        self._tracking_ready = False

    @abstractmethod
    def transaction(self) -> AbstractContextManager[ViewCursor]:
        """One transaction, committed when the block exits cleanly, else rolled back."""

    @abstractmethod
    def read(self) -> AbstractContextManager[ViewCursor]:
        """A cursor for queries (a consistent snapshot; nothing written is kept)."""

    def snapshot(self) -> AbstractContextManager[ViewCursor]:
        """A read whose statements all see the views as of one moment, tracking rows
        included (the dashboard's start state: rows and their positions must agree).
        SQLite's read transaction already is one (WAL: a snapshot from its first read)."""
        return self.read()

    @abstractmethod
    def _serialise_schema_changes(self, cursor: ViewCursor) -> None:
        """Keep concurrent `ensure`/`drop` calls (other processes too) from racing."""

    @abstractmethod
    def close(self) -> None:
        """Release every connection."""

    def ensure(self, projection: Projection | type[Projection], defer: bool = False) -> None:
        """Create the projection's tables and its tracking row (position 0) if missing;
        first drop them if they were made for another `version` of the projection (a
        view made before versions were recorded is version 1). With `defer`, its
        `deferred_ddl` is left for later (`ensure_tables`, after a rebuild)."""
        self._ensure_tracking_table()
        with self.transaction() as cursor:
            self._serialise_schema_changes(cursor)
            cursor.execute(
                "SELECT v.version, t.notification_id FROM al_tracking t"
                " LEFT JOIN al_view_versions v ON v.projection = t.projection"
                " WHERE t.projection = ?",
                (projection.name,),
            )
            row = cursor.fetchone()
            stored = None if row is None else 1 if row[0] is None else int(row[0])
            if stored is not None and stored != projection.version:
                log.warning(
                    "view tables are of another version; dropping them to fold the view again",
                    view=projection.name,
                    stored_version=stored,
                    version=projection.version,
                    position=int(row[1]) if row is not None else None,
                )
                self._drop_in(cursor, projection)
            elif stored is not None and isinstance(projection, Projection):
                reason = projection.stale_reason(cursor)
                if reason is not None:
                    log.warning(
                        "view tables were made differently; dropping them to fold the view again",
                        view=projection.name,
                        reason=reason,
                    )
                    self._drop_in(cursor, projection)
            for statement in (*projection.ddl, *(() if defer else projection.deferred_ddl)):
                cursor.execute(statement)
            cursor.execute(
                "INSERT INTO al_tracking (projection, notification_id) VALUES (?, 0)"
                " ON CONFLICT (projection) DO NOTHING",
                (projection.name,),
            )
            cursor.execute(
                "INSERT INTO al_view_versions (projection, version) VALUES (?, ?)"
                " ON CONFLICT (projection) DO UPDATE SET version = excluded.version",
                (projection.name, projection.version),
            )
        self._tracking_ready = True

    def drop(self, projection: Projection | type[Projection]) -> None:
        """Drop the projection's tables and its tracking row, in one transaction."""
        with self.transaction() as cursor:
            self._serialise_schema_changes(cursor)
            cursor.execute(_TRACKING_DDL)
            cursor.execute(_VERSIONS_DDL)
            self._drop_in(cursor, projection)

    def _drop_in(self, cursor: ViewCursor, projection: Projection | type[Projection]) -> None:
        # The tracking row first: a projector holding it finishes its batch before the
        # tables go, and one waiting for it then finds no row and skips.
        cursor.execute("DELETE FROM al_tracking WHERE projection = ?", (projection.name,))
        cursor.execute("DELETE FROM al_view_versions WHERE projection = ?", (projection.name,))
        for table in projection.tables:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def ensure_tables(self, *ddl: str) -> None:
        """Run `CREATE ... IF NOT EXISTS` statements of bookkeeping tables (beside the
        views), serialised with every other schema change."""
        with self.transaction() as cursor:
            self._serialise_schema_changes(cursor)
            for statement in ddl:
                cursor.execute(statement)

    def tracking(self, name: str) -> int:
        """The last notification id applied under `name` (0 if none)."""
        self._ensure_tracking_table()
        with self.read() as cursor:
            cursor.execute(_SELECT_TRACKING, (name,))
            row = cursor.fetchone()
        return 0 if row is None else int(row[0])

    def tracking_exists(self, name: str) -> bool:
        """Whether projection `name` has a tracking row (its view exists)."""
        self._ensure_tracking_table()
        with self.read() as cursor:
            cursor.execute(_SELECT_TRACKING, (name,))
            return cursor.fetchone() is not None

    def lowest_tracking(self, names: Sequence[str]) -> int:
        """The lowest position among `names` (0 if any has none), in one query: how far
        every one of those projections has applied the log."""
        self._ensure_tracking_table()
        wanted = sorted(set(names))
        with self.read() as cursor:
            cursor.execute(f"{_SELECT_TRACKINGS} ({', '.join('?' * len(wanted))})", wanted)
            found = {str(name): int(position) for name, position in cursor.fetchall()}
        return min((found.get(name, 0) for name in wanted), default=0)

    def trackings(self, cursor: ViewCursor, names: Sequence[str]) -> dict[str, int]:
        """Inside the caller's read (a `snapshot`): the position of each of `names`, 0 for
        one without a tracking row; nothing is locked."""
        wanted = sorted(set(names))
        cursor.execute(f"{_SELECT_TRACKINGS} ({', '.join('?' * len(wanted))})", wanted)
        found = {str(name): int(position) for name, position in cursor.fetchall()}
        return {name: found.get(name, 0) for name in names}

    def lock_tracking(self, cursor: ViewCursor, name: str) -> int | None:
        """Inside a transaction: the position under `name`, locked until commit (None if the
        projection has no tracking row, e.g. while it is being dropped)."""
        cursor.execute(_SELECT_TRACKING + self._row_lock, (name,))
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def lock_trackings(self, cursor: ViewCursor, names: Sequence[str]) -> dict[str, int | None]:
        """`lock_tracking` for several projections in one statement; the rows are locked
        in name order, so concurrent callers cannot deadlock."""
        ordered = sorted(set(names))
        cursor.execute(
            f"{_SELECT_TRACKINGS} ({', '.join('?' * len(ordered))})"
            f" ORDER BY projection{self._row_lock}",
            ordered,
        )
        found = {str(name): int(position) for name, position in cursor.fetchall()}
        return {name: found.get(name) for name in names}

    def set_tracking(self, cursor: ViewCursor, name: str, notification_id: int) -> None:
        """Inside the caller's transaction: record `notification_id` as applied."""
        cursor.execute(_SET_TRACKING, (name, notification_id))

    def set_trackings(self, cursor: ViewCursor, positions: dict[str, int]) -> None:
        """`set_tracking` for several projections in one statement."""
        if positions:
            cursor.executemany(_SET_TRACKING, list(positions.items()))

    def commit_signal(self, channel: str) -> CommitSignal | None:
        """A signal raised whenever a transaction that NOTIFYs `channel` commits in the
        events' database, or None if the backend has no such thing (SQLite)."""
        return None

    def event_writers(self, cursor: ViewCursor, table: str) -> frozenset[str] | None:
        """The transactions inserting into the event store's `table` right now, or None
        where the views cannot see them (SQLite, whose writers are serialised: a gap in
        its notification ids never fills later).

        Used to tell a gap in the notification log that a transaction still in flight
        will fill from one it never will (a rolled-back insert).
        """
        return None

    def _ensure_tracking_table(self) -> None:
        if not self._tracking_ready:
            with self.transaction() as cursor:
                self._serialise_schema_changes(cursor)
                cursor.execute(_TRACKING_DDL)
                cursor.execute(_VERSIONS_DDL)
            self._tracking_ready = True


# -- SQLite -------------------------------------------------------------------------

_TRANSIENT_SQLITE = ("locked", "busy", "unable to open", "disk i/o")


def _is_transient(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return any(fragment in message for fragment in _TRANSIENT_SQLITE)


class _SQLiteCursor:
    """A `ViewCursor` over a sqlite3 cursor (writing text without NUL, as PostgreSQL)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _SQLiteCursor:
        self._cursor.execute(sql, _clean(params))
        return self

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> _SQLiteCursor:
        self._cursor.executemany(sql, (_clean(p) for p in params))
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()


class SQLiteViewStore(ViewStore):
    """Views in a SQLite file; one writer and one reader connection per thread."""

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self, role: str) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, role, None)
        if connection is None:
            try:
                connection = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
                # Views can always be rebuilt from the log: trade fsyncs for throughput.
                connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as e:
                raise StoreUnavailable(f"view store {self.path} unavailable: {e}") from None
            setattr(self._local, role, connection)
            with self._lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self, role: str, begin: str, keep: bool) -> Iterator[ViewCursor]:
        connection = self._connection(role)
        if connection.in_transaction:
            raise RuntimeError("a view-store transaction is already open in this thread")
        try:
            connection.execute(begin)
            try:
                yield _SQLiteCursor(connection.cursor())
            except BaseException:
                connection.rollback()
                raise
            if keep:
                connection.commit()
            else:
                connection.rollback()
        except sqlite3.OperationalError as e:
            if connection.in_transaction:
                connection.rollback()
            if _is_transient(e):
                raise StoreUnavailable(f"view store {self.path} unavailable: {e}") from None
            raise

    def transaction(self) -> AbstractContextManager[ViewCursor]:
        # IMMEDIATE takes the write lock up front: writers queue instead of deadlocking.
        return self._transaction("writer", "BEGIN IMMEDIATE", keep=True)

    def read(self) -> AbstractContextManager[ViewCursor]:
        return self._transaction("reader", "BEGIN", keep=False)

    def _serialise_schema_changes(self, cursor: ViewCursor) -> None:
        pass  # BEGIN IMMEDIATE already serialises every writer

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


# -- PostgreSQL ---------------------------------------------------------------------

_SCHEMA_LOCK_KEY = 0x616C5F76  # "al_v": advisory lock serialising DDL on the views


@lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Convert `?` placeholders to psycopg's `%s`, escaping literal `%` as `%%`.

    A `?` inside a quoted literal or identifier is left alone.
    """
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if char == "%":
            out.append("%%")
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None  # a doubled quote closes and reopens: still correct
        elif char == "?" and quote is None:
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


class _PostgresCursor:
    """A `ViewCursor` over a psycopg cursor."""

    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _PostgresCursor:
        # Always pass a params tuple: only then does psycopg unescape `%%`.
        self._cursor.execute(to_pyformat(sql), _clean(params))
        return self

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> _PostgresCursor:
        # Pipelined by psycopg: one round trip at most, however many rows.
        self._cursor.executemany(to_pyformat(sql), [_clean(p) for p in params])
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()


def _conninfo(dsn: str) -> tuple[str, dict[str, Any]]:
    """psycopg conninfo and connection kwargs from a DSN; an eventsourcing-style `schema`
    query parameter becomes the search_path."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query)
    schema = [value for key, value in query if key == "schema"]
    kwargs: dict[str, Any] = {"connect_timeout": 5}
    if schema:
        kwargs["options"] = f"-c search_path={schema[-1]}"
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), kwargs


_CHECK_IDLE_S = 1.0
"""A pooled connection idle longer than this is checked (a round trip) before use."""
_LISTEN_TICK_S = 0.25
"""How often the listener thread looks up from the socket to see whether to stop."""


_DATA_LIMITS = "54"
"""SQLSTATE class of "program limit exceeded" (e.g. a value too large for an index row):
an `OperationalError` in psycopg, but about a value written, not about the server."""


def _is_about_the_data(error: psycopg.OperationalError) -> bool:
    """Whether an `OperationalError` is caused by what was written (retrying the same
    write fails the same way), not by reaching or holding the server."""
    return (error.sqlstate or "").startswith(_DATA_LIMITS)


class PostgresViewStore(ViewStore):
    """Views in PostgreSQL, over a psycopg connection pool."""

    _row_lock = " FOR UPDATE"
    sees_event_writers = True

    def __init__(self, dsn: str, pool_size: int = 4, timeout_s: float = 10.0) -> None:
        super().__init__()
        self._conninfo, self._kwargs = _conninfo(dsn)
        self._timeout_s = timeout_s
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                self._conninfo,
                min_size=1,
                max_size=pool_size,
                kwargs=self._kwargs,
                check=self._check_if_idle,
                name="agentledger-views",
                open=True,
            )
        )

    def _check_if_idle(self, connection: psycopg.Connection[Any]) -> None:
        """Check a connection that sat idle (it may have been cut by a restart); one in
        steady use is not checked: a broken one fails its transaction, which the caller
        retries as `StoreUnavailable`, and the pool replaces it."""
        if time.monotonic() - self._last_used.get(connection, 0.0) > _CHECK_IDLE_S:
            psycopg_pool.ConnectionPool.check_connection(connection)

    @contextmanager
    def _transaction(self, keep: bool) -> Iterator[ViewCursor]:
        try:
            with self._pool.connection(timeout=self._timeout_s) as connection:
                try:
                    with connection.cursor() as cursor:
                        if keep:
                            with connection.pipeline():
                                yield _PostgresCursor(cursor)
                                # Queued behind the writes: the pipeline's closing sync
                                # is the transaction's only round trip after its reads.
                                cursor.execute("COMMIT")
                        else:
                            yield _PostgresCursor(cursor)
                    if not keep:
                        connection.rollback()
                finally:
                    self._last_used[connection] = time.monotonic()
        except psycopg_pool.PoolTimeout as e:
            raise StoreUnavailable(f"view store unavailable: {e}") from None
        except psycopg.OperationalError as e:
            if _is_about_the_data(e):
                raise
            raise StoreUnavailable(f"view store unavailable: {e}") from None

    def transaction(self) -> AbstractContextManager[ViewCursor]:
        return self._transaction(keep=True)

    def read(self) -> AbstractContextManager[ViewCursor]:
        return self._transaction(keep=False)

    @contextmanager
    def snapshot(self) -> Iterator[ViewCursor]:
        # READ COMMITTED gives each statement its own snapshot; this gives the whole read one.
        with self._transaction(keep=False) as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cursor

    def _serialise_schema_changes(self, cursor: ViewCursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))
        # Fetched (a round trip): in pipeline mode a later fetch would get this result.
        cursor.fetchone()

    def commit_signal(self, channel: str) -> CommitSignal | None:
        return _PostgresCommitSignal(self._conninfo, self._kwargs, channel)

    def event_writers(self, cursor: ViewCursor, table: str) -> frozenset[str] | None:
        # An INSERT holds ROW EXCLUSIVE on the table from before it draws its ids until
        # its transaction ends; a virtual transaction id names one transaction.
        cursor.execute(
            "SELECT to_regclass(?) IS NOT NULL, ARRAY(SELECT virtualtransaction FROM pg_locks"
            " WHERE locktype = 'relation' AND relation = to_regclass(?)"
            " AND mode = 'RowExclusiveLock' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            (table, table),
        )
        row = cursor.fetchone()
        if row is None or not row[0]:
            raise LookupError(f"the event store's table {table!r} is not on the search path")
        return frozenset(str(v) for v in row[1])

    def close(self) -> None:
        self._pool.close()


class _PostgresCommitSignal:
    """LISTENs to a channel on a connection of its own, in a daemon thread, and raises
    an event on every notification. Reconnects with backoff when the connection fails;
    `listening` is False meanwhile, and the event is raised once listening again (what
    committed in between was not notified)."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], channel: str) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._channel = channel
        self._event = threading.Event()
        self._stop = threading.Event()
        self._listening = False
        self._thread = threading.Thread(
            target=self._run, name="agentledger-views-listen", daemon=True
        )
        self._thread.start()

    @property
    def listening(self) -> bool:
        return self._listening

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def clear(self) -> None:
        self._event.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_LISTEN_TICK_S + 6.0)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listening = True
                    failures = 0
                    self._event.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_LISTEN_TICK_S):
                            self._event.set()
            except psycopg.Error as e:
                failures += 1
                log.warning(
                    "cannot listen for commits; polling meanwhile",
                    channel=self._channel,
                    error=str(e),
                )
            finally:
                self._listening = False
            self._stop.wait(min(5.0, 0.1 * 2**failures))


def view_store_for(settings: Settings) -> ViewStore:
    """The view store these settings name: PostgreSQL if a DSN is set, else SQLite; with
    a cipher key, prompts, outputs and transcripts are sealed in the views too."""
    store: ViewStore
    if settings.postgres_dsn is not None:
        dsn = settings.postgres_dsn.get_secret_value()
        # One direct connection first: an unreachable database is one clear error within
        # postgres_connect_timeout_s, not a pool retrying (and warning) in the background.
        conninfo, kwargs = _conninfo(dsn)
        kwargs["connect_timeout"] = max(2, round(settings.postgres_connect_timeout_s))
        try:
            psycopg.connect(conninfo, **kwargs).close()
        except psycopg.OperationalError as e:
            raise unreachable_postgres(settings, e) from None
        store = PostgresViewStore(dsn)
    else:
        store = SQLiteViewStore(settings.views_sqlite_file)
    if settings.cipher_key is not None:
        store.sealer = AesSealer(settings.cipher_key.get_secret_value())
    return store
