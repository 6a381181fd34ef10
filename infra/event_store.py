"""The event store: an eventsourcing `Application` on PostgreSQL or SQLite.

The library is synchronous; callers on the event loop go through `AsyncEventStore`,
which runs each call in a bounded thread pool. Library errors are translated here into
`StoreUnavailable` (transient: retry later) so handlers never see driver exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, DomainEvent, OriginatorVersionError
from eventsourcing.persistence import (
    IntegrityError,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from psycopg import sql as pg_sql

# Imported for their event classes: each registers its stable topic on import.
import agentledger.domain.rejection
import agentledger.domain.run  # noqa: F401
from agentledger.domain.conversation import Conversation
from agentledger.infra.settings import Settings

__all__ = [
    "AsyncEventStore",
    "BrokenStream",
    "ConcurrencyConflict",
    "EventStore",
    "RunSuperseded",
    "StoreUnavailable",
    "TopicSize",
    "UnsafeDelete",
    "UnsavedAggregate",
    "UnsupportedBackend",
    "store_env",
    "unreachable_postgres",
]

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)

APPLICATION_NAME = "agentledger"


class StoreUnavailable(Exception):
    """The database could not be reached or failed transiently; try again later."""


class ConcurrencyConflict(Exception):
    """Another writer saved the same aggregate version first (optimistic concurrency)."""


class RunSuperseded(Exception):
    """Another worker advanced this run concurrently (or holds its lease); let it
    finish. Nothing more is recorded by the worker that gets this."""


class UnsavedAggregate(StoreUnavailable):
    """An earlier save of this aggregate object failed for good: its version ran ahead
    of the store, so saving it again would leave a gap in its stream. Reload it."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(
            f"aggregate {aggregate_id} has events that were never saved (an earlier save"
            " failed); reload it from the store before saving again"
        )


class BrokenStream(Exception):
    """An aggregate's stored events are not contiguous (a version is missing): it cannot
    be loaded. Not transient; an operator must look (`agentledger events ID`)."""


_SAVE_FAILED = "_agentledger_save_failed"
"""Set on an aggregate object whose save failed after its events were collected."""


_SAVE_LOCK = "_agentledger_save_lock"


def _save_lock(aggregate: Aggregate) -> asyncio.Lock:
    """The lock serialising saves of one aggregate object (kept on the object)."""
    lock: asyncio.Lock | None = getattr(aggregate, _SAVE_LOCK, None)
    if lock is None:
        lock = asyncio.Lock()
        setattr(aggregate, _SAVE_LOCK, lock)
    return lock


class _Ledger(Application[UUID]):
    name = APPLICATION_NAME
    is_snapshotting_enabled = True


SNAPSHOT_EVERY: dict[type[Any], int] = {Conversation.Event: 50}
"""A session gains one event per turn; its (tiny) state is snapshotted every so often so
that loading it to append a turn does not grow with the conversation."""


def postgres_env(dsn: str) -> dict[str, str]:
    """eventsourcing's POSTGRES_* variables from a libpq URL."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("AGENTLEDGER_POSTGRES_DSN must be a postgresql:// URL")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": query.get("host") or parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or query.get("port") or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"]
    return env


def store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for these settings."""
    env: dict[str, str]
    if settings.postgres_dsn is not None:
        env = postgres_env(settings.postgres_dsn.get_secret_value())
        env.update(
            {
                "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
                "POSTGRES_MAX_OVERFLOW": str(settings.postgres_pool_size),
                # No pre-ping (a query per checkout): a connection broken by a database
                # restart fails its operation, the pool discards it, and the save is
                # retried by AsyncEventStore.
                # How long a pooled connection is waited for (eventsourcing then retries
                # a failing call 10 times, so an outage costs ~10x this per call).
                "POSTGRES_CONNECT_TIMEOUT": str(max(1, round(settings.postgres_connect_timeout_s))),
                "POSTGRES_LOCK_TIMEOUT": "10000",
                "POSTGRES_ENABLE_DB_FUNCTIONS": "y" if settings.postgres_db_functions else "",
            }
        )
    else:
        path = Path(settings.sqlite_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    if settings.cipher_key is not None:
        env["CIPHER_TOPIC"] = "eventsourcing.cipher:AESCipher"
        env["CIPHER_KEY"] = settings.cipher_key.get_secret_value()
    return env


_SCHEMA_LOCK_KEY = 0x61676C64  # "agld": one advisory lock id for agentledger's DDL


def unreachable_postgres(settings: Settings, error: Exception) -> StoreUnavailable:
    """One line naming the database (never its credentials) and the driver's reason."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return StoreUnavailable(
        f"cannot reach PostgreSQL at {settings.safe_postgres_target()} within"
        f" {settings.postgres_connect_timeout_s:g}s: {reason}"
    )


@contextmanager
def _schema_lock(settings: Settings) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while creating tables (released on disconnect).

    It is also the first connection a process makes: an unreachable database fails here,
    within `postgres_connect_timeout_s`, with one clear line (before the pool retries).
    """
    assert settings.postgres_dsn is not None
    try:
        connection = psycopg.connect(
            settings.postgres_dsn.get_secret_value(),
            autocommit=True,
            connect_timeout=max(2, round(settings.postgres_connect_timeout_s)),
        )
    except psycopg.OperationalError as e:
        raise unreachable_postgres(settings, e) from None
    with connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


def _translate(call: Callable[[], T]) -> T:
    try:
        return call()
    except IntegrityError as e:
        raise ConcurrencyConflict(str(e)) from None
    except (OperationalError, psycopg.OperationalError, sqlite3.OperationalError) as e:
        raise StoreUnavailable(f"event store unavailable: {e}") from None
    except PersistenceError as e:
        raise StoreUnavailable(f"event store error: {e}") from None
    except OriginatorVersionError as e:
        raise BrokenStream(f"an aggregate's stored events are not contiguous: {e}") from None


@dataclass(frozen=True, kw_only=True)
class TopicSize:
    """How much of the store one event topic takes."""

    topic: str
    events: int
    bytes: int
    """Stored state bytes (after compression and encryption, if any)."""


class EventStore:
    """Synchronous facade over the eventsourcing application."""

    def __init__(self, settings: Settings | None = None, *, env: dict[str, str] | None = None):
        """A store for `settings`, or (with `env`) for eventsourcing's own variables;
        `EventStore.in_memory()` is a throwaway store (replay runs in one)."""
        if settings is None:
            if env is None:
                raise ValueError("EventStore needs settings or an eventsourcing env")
            self._app = _translate(lambda: _Ledger(env=env))
            self.name = APPLICATION_NAME
            return
        env = store_env(settings)
        if settings.postgres_dsn is not None:
            # Processes starting together on a fresh database would race to create the
            # tables (CREATE TABLE IF NOT EXISTS is not safe against a concurrent twin).
            with _schema_lock(settings):
                self._app = _translate(lambda: _Ledger(env=env))
        else:
            self._app = _translate(lambda: _Ledger(env=env))
        self.name = APPLICATION_NAME

    def get(self, aggregate_id: UUID, cls: type[A], version: int | None = None) -> A | None:
        """The aggregate, or None if it has no events."""

        def call() -> A | None:
            try:
                aggregate: Aggregate = self._app.repository.get(aggregate_id, version=version)
            except AggregateNotFoundError:
                return None
            if not isinstance(aggregate, cls):
                raise TypeError(
                    f"{aggregate_id} is a {type(aggregate).__name__}, not {cls.__name__}"
                )
            return aggregate

        return _translate(call)

    def events(self, aggregate_id: UUID, lte: int | None = None) -> list[Any]:
        """All domain events of one aggregate in order (up to version `lte`)."""
        return _translate(lambda: list(self._app.events.get(aggregate_id, lte=lte)))

    def save(self, *objs: Aggregate | DomainEvent) -> int | None:
        """Atomically save the pending events of the aggregates (or the given events);
        returns the last notification id."""

        def call() -> int | None:
            recordings = self._app.save(*objs)
            for recording in recordings:
                self._maybe_snapshot(recording.domain_event)
            return recordings[-1].notification.id if recordings else None

        return _translate(call)

    def _maybe_snapshot(self, domain_event: Any) -> None:
        for event_type, interval in SNAPSHOT_EVERY.items():
            if isinstance(domain_event, event_type):
                if domain_event.originator_version % interval == 0:
                    self._app.take_snapshot(
                        domain_event.originator_id, version=domain_event.originator_version
                    )
                return

    def notifications(self, start: int, limit: int) -> Sequence[Notification]:
        """Notifications (the global, gap-free log) from id `start`, at most `limit`."""
        return _translate(lambda: self._app.recorder.select_notifications(start=start, limit=limit))

    def max_notification_id(self) -> int:
        return _translate(lambda: self._app.recorder.max_notification_id() or 0)

    def decode(self, notification: Notification) -> Any:
        """The domain event of a notification (decrypted if a cipher is configured)."""
        return self._app.mapper.to_domain_event(notification)

    def insert_transcoded(self, records: Sequence[tuple[UUID, int, str, bytes]]) -> None:
        """Insert events as (originator id, version, topic, transcoded state) - the
        transcoder's plain JSON, before compression and encryption, which this applies as
        configured. For loading raw stored events (fixtures, migrations); they are read
        back, and upcast, like any other."""
        mapper = self._app.mapper

        def seal(state: bytes) -> bytes:
            if mapper.compressor:
                state = mapper.compressor.compress(state)
            if mapper.cipher:
                state = mapper.cipher.encrypt(state)
            return state

        stored = [
            StoredEvent(originator_id=i, originator_version=v, topic=t, state=seal(s))
            for i, v, t, s in records
        ]
        _translate(lambda: self._app.recorder.insert_events(stored))

    @classmethod
    def in_memory(cls) -> EventStore:
        """A store in this process's memory only (eventsourcing's POPO recorders)."""
        return cls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    @property
    def backend(self) -> str:
        recorder = type(self._app.recorder).__module__
        return recorder.rpartition(".")[2]  # "postgres", "sqlite" or "popo"

    def _tables(self, what: str) -> tuple[str, str | None]:
        """The events and snapshots tables of a SQL backend (`UnsupportedBackend` for the
        in-memory one, which has no tables)."""
        if self.backend not in ("postgres", "sqlite"):
            raise UnsupportedBackend(f"{what} needs PostgreSQL or SQLite, not {self.backend}")
        events = self._app.recorder.events_table_name  # type: ignore[attr-defined]
        snapshots = self._app.snapshots.recorder if self._app.snapshots else None
        return events, getattr(snapshots, "events_table_name", None)

    @property
    def _notification(self) -> str:
        """The column holding notification ids (SQLite uses the implicit rowid)."""
        return "notification_id" if self.backend == "postgres" else "rowid"

    def _newest_holder_sql(self) -> str:
        n = self._notification
        return f"SELECT originator_id FROM {{table}} WHERE {n} = (SELECT MAX({n}) FROM {{table}})"

    def topic_sizes(self) -> tuple[list[TopicSize], TopicSize | None]:
        """Events and stored bytes per topic, and the same for all snapshots together."""
        events_table, snapshots_table = self._tables("a size report")

        def measure(table: str) -> list[TopicSize]:
            length = "octet_length" if self.backend == "postgres" else "length"
            rows = self._select(
                f"SELECT topic, COUNT(*), COALESCE(SUM({length}(state)), 0) FROM {{table}}"
                " GROUP BY topic ORDER BY topic",
                table,
            )
            return [TopicSize(topic=r[0], events=int(r[1]), bytes=int(r[2])) for r in rows]

        def call() -> tuple[list[TopicSize], TopicSize | None]:
            topics = measure(events_table)
            snapshot = None
            if snapshots_table is not None:
                sizes = measure(snapshots_table)
                snapshot = TopicSize(
                    topic="(snapshots)",
                    events=sum(t.events for t in sizes),
                    bytes=sum(t.bytes for t in sizes),
                )
            return topics, snapshot

        return _translate(call)

    def _select(self, statement: str, table: str, params: Sequence[Any] = ()) -> list[Any]:
        datastore = self._app.recorder.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(self._sql(statement, table), params)
            return [_row(r) for r in cursor.fetchall()]

    def _sql(self, statement: str, table: str) -> Any:
        if self.backend == "postgres":
            schema = self._app.recorder.datastore.schema  # type: ignore[attr-defined]
            return pg_sql.SQL(statement.replace("?", "%s")).format(
                table=pg_sql.Identifier(schema, table)
            )
        return statement.format(table=table)

    def delete_aggregates(self, aggregate_ids: Sequence[UUID]) -> int:
        """Remove these aggregates' events (and snapshots) in one transaction; the number
        of events removed. For archiving only: the events must be kept elsewhere first.

        The event holding the highest notification id is never removed (`UnsafeDelete`):
        SQLite draws the next id from the highest row left, so removing the last one
        would hand its id out again and projections past it would miss the new event.
        """
        events_table, snapshots_table = self._tables("deleting events")
        if not aggregate_ids:
            return 0
        as_param = [self._id_param(i) for i in aggregate_ids]
        marks = ", ".join("?" for _ in as_param)

        def call() -> int:
            datastore = self._app.recorder.datastore  # type: ignore[attr-defined]
            with datastore.transaction(commit=True) as cursor:
                if self.backend == "postgres":
                    # The same lock eventsourcing's inserts take: no id drawn meanwhile.
                    cursor.execute(self._sql("LOCK TABLE {table} IN EXCLUSIVE MODE", events_table))
                cursor.execute(self._sql(self._newest_holder_sql(), events_table))
                last = [_row(r)[0] for r in cursor.fetchall()]
                if any(str(holder) in {str(p) for p in as_param} for holder in last):
                    raise UnsafeDelete(
                        "an aggregate to remove holds the newest event of the store; keep it"
                        " until newer events are recorded"
                    )
                cursor.execute(
                    self._sql(
                        f"DELETE FROM {{table}} WHERE originator_id IN ({marks})", events_table
                    ),
                    as_param,
                )
                removed = int(getattr(cursor, "sqlite_cursor", cursor).rowcount)
                if snapshots_table is not None:
                    cursor.execute(
                        self._sql(
                            f"DELETE FROM {{table}} WHERE originator_id IN ({marks})",
                            snapshots_table,
                        ),
                        as_param,
                    )
                return removed

        return _translate(call)

    def last_notification_ids(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The notification id of each aggregate's latest stored event."""
        events_table, _ = self._tables("notification ids")
        found: dict[UUID, int] = {}
        ids = list(aggregate_ids)
        for start in range(0, len(ids), 500):
            chunk = [self._id_param(i) for i in ids[start : start + 500]]
            statement = (
                f"SELECT originator_id, MAX({self._notification}) FROM {{table}}"
                f" WHERE originator_id IN ({', '.join('?' for _ in chunk)})"
                " GROUP BY originator_id"
            )
            rows = _translate(partial(self._select, statement, events_table, chunk))
            for holder, last in rows:
                found[_as_uuid(holder)] = int(last)
        return found

    def newest_aggregate_id(self) -> UUID | None:
        """The aggregate holding the event with the highest notification id."""
        events_table, _ = self._tables("the newest aggregate")
        rows = _translate(partial(self._select, self._newest_holder_sql(), events_table))
        return _as_uuid(rows[0][0]) if rows else None

    def _id_param(self, aggregate_id: UUID) -> Any:
        return aggregate_id if self.backend == "postgres" else aggregate_id.hex

    def close(self) -> None:
        self._app.close()


def _row(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _as_uuid(value: Any) -> UUID:
    """An originator id as read back (a UUID on PostgreSQL, hex text on SQLite)."""
    return value if isinstance(value, UUID) else UUID(str(value))


class UnsupportedBackend(Exception):
    """The operation reads or writes SQL tables; the in-memory store has none."""


class UnsafeDelete(Exception):
    """Removing these events would let the store reuse a notification id."""


class _Save:
    """One save waiting for the writer thread: its events and where to answer."""

    __slots__ = ("events", "future", "loop")

    def __init__(self, events: list[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.events = events
        self.loop = loop
        self.future: asyncio.Future[int | None] = loop.create_future()


def _answer(answers: list[tuple[_Save, int | None, BaseException | None]]) -> None:
    """Settle the futures of one committed batch (on their event loop)."""
    for pending, result, error in answers:
        if pending.future.done():  # its caller was cancelled meanwhile
            continue
        if error is None:
            pending.future.set_result(result)
        else:
            pending.future.set_exception(error)


MAX_BATCH_EVENTS = 1000
"""At most this many events in one group commit (the saves queued meanwhile)."""
WRITER_IDLE_S = 2.0
"""The writer thread ends after this long without a save (the next save starts one)."""


class _Writer:
    """The thread that commits saves: all the saves queued while it was busy go in one
    transaction (group commit), and their callers are answered with one wake-up of
    their event loop. Under load that is one thread hop and one commit for many saves
    instead of one of each per save; alone, a save costs what it did.

    A batch that fails for any reason but an unreachable database is retried one save
    at a time, so each save gets its own outcome (a conflict or a bad event of one run
    never fails another's). An unreachable database fails them all with
    `StoreUnavailable`, which each caller retries on its own."""

    def __init__(self, save: Callable[..., int | None]) -> None:
        self._save = save
        self._queue: queue.SimpleQueue[_Save | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, pending: _Save) -> None:
        with self._lock:
            self._queue.put(pending)
            if self._thread is None:  # started on demand, ended when idle
                self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._lock:
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join()
            with self._lock:
                self._thread = None

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=WRITER_IDLE_S)
            except queue.Empty:
                with self._lock:  # submit() starts another thread after this
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if first is None:
                return
            batch = [first]
            size = len(first.events)
            closing = False
            while size < MAX_BATCH_EVENTS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
                size += len(more.events)
            self._commit(batch)
            if closing:
                return

    def _commit(self, batch: list[_Save]) -> None:
        answers: list[tuple[_Save, int | None, BaseException | None]] = []
        try:
            last = self._save(*(e for pending in batch for e in pending.events))
        except StoreUnavailable as e:
            # Nothing (or, its answer lost, everything) was committed: each caller
            # retries its own save (`_save_events`).
            answers.append((batch[0], None, e))
            answers += [(pending, None, StoreUnavailable(str(e))) for pending in batch[1:]]
        except Exception as e:
            if len(batch) == 1:
                answers.append((batch[0], None, e))
            else:  # nothing was committed: find whose save it was
                answers = [self._alone(pending) for pending in batch]
        else:
            # The batch's last notification id: at or after each save's own.
            answers = [(pending, last, None) for pending in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for answer in answers:
            by_loop.setdefault(answer[0].loop, []).append(answer)
        for loop, theirs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_answer, theirs)

    def _alone(self, pending: _Save) -> tuple[_Save, int | None, BaseException | None]:
        try:
            return pending, self._save(*pending.events), None
        except Exception as e:
            return pending, None, e


class AsyncEventStore:
    """`EventStore` for the event loop: reads in a bounded thread pool, saves on one
    writer thread that commits the saves queued meanwhile together (`_Writer`).

    A save that fails because the database is unreachable is retried with backoff for
    up to `retry_s` with the very same events, so a short outage does not force work
    already done (a tool's effect, a model call) to be done again.
    """

    def __init__(self, store: EventStore, threads: int, retry_s: float = 20.0) -> None:
        """`threads=0` calls the store on the event loop itself: only for a store that
        never blocks (the in-memory one replay uses)."""
        self.sync = store
        self.retry_s = retry_s
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store") if threads else None
        )
        self._writer = _Writer(store.save)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def _commit(self, events: list[Any]) -> int | None:
        """Save `events` atomically through the writer thread (on the loop without a
        pool)."""
        if self._pool is None:
            return self.sync.save(*events)
        pending = _Save(events, asyncio.get_running_loop())
        self._writer.submit(pending)
        return await pending.future

    async def get(self, aggregate_id: UUID, cls: type[A], version: int | None = None) -> A | None:
        return await self._call(self.sync.get, aggregate_id, cls, version)

    async def events(self, aggregate_id: UUID, lte: int | None = None) -> list[Any]:
        return await self._call(self.sync.events, aggregate_id, lte)

    async def save(self, *aggregates: Aggregate) -> int | None:
        """Save the aggregates' pending events atomically.

        Saves of one aggregate object are serialised (parallel tool calls of a run save
        the same object). Collecting the events moves them out of the aggregate; if the
        save then fails for good, the object is ahead of the store: it is marked, and
        any later save of it raises `UnsavedAggregate` (reload it). Otherwise a sibling
        step would save the same object at a later version and leave a gap in its
        stream that no load survives.
        """
        locks = [_save_lock(a) for a in sorted(aggregates, key=lambda a: a.id)]
        async with contextlib.AsyncExitStack() as held:
            for lock in locks:
                await held.enter_async_context(lock)
            for aggregate in aggregates:
                if getattr(aggregate, _SAVE_FAILED, False):
                    raise UnsavedAggregate(aggregate.id)
            events = [e for a in aggregates for e in a.collect_events()]
            try:
                return await self._save_events(events)
            except BaseException:
                for aggregate in aggregates:
                    setattr(aggregate, _SAVE_FAILED, True)
                raise

    async def _save_events(self, events: list[Any]) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_s
        delay = 0.05
        retried = False
        while True:
            try:
                return await self._commit(events)
            except StoreUnavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True
            except ConcurrencyConflict:
                # A retry after an ambiguous failure (the commit went through, its answer
                # was lost) meets its own events: that is a success.
                if retried and await self._call(self._already_saved, events):
                    return None
                raise

    def _already_saved(self, events: list[Any]) -> bool:
        for event in events:
            stored = self.sync.events(event.originator_id, lte=event.originator_version)
            if not stored or stored[-1].originator_version != event.originator_version:
                return False
            if (type(stored[-1]), stored[-1].timestamp) != (type(event), event.timestamp):
                return False
        return True

    def close(self) -> None:
        self._writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.sync.close()
