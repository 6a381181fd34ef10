"""The projector: folds the event store's notification log into the views, exactly once.

For each projection, one view-store transaction locks its tracking row, reads the
notifications after it, applies them and moves the row to the last one; so a batch
is applied whole or not at all, and two projectors (the live one and a rebuild, or two
processes) never apply the same notification twice: the second waits for the row and
then starts where the first stopped.

The log is read in notification-id order, but ids are drawn before their transactions
commit, and not always committed in that order: a reader can see id n + 1 while n is
still in flight, or never see n (its transaction rolled back). A read therefore stops
before a gap in the ids until the gap is known to be for ever
(`agentledger.handlers.log_gaps`), so no event is skipped because it committed a moment
late.

Each projection gets its events a batch at a time (`Projection.apply_batch`), so a batch
writes each touched row once; on PostgreSQL the whole transaction is pipelined (see
`agentledger.infra.view_store`), a few round trips per batch however many events it holds.

Waiting for new events (`run_forever`) - the choice made to keep idle cost low:
- On PostgreSQL the projector LISTENs to the channel eventsourcing NOTIFYs on every
  insert of events (`PostgresApplicationRecorder.channel_name`), on a connection of its
  own (`ViewStore.commit_signal`). After a pass it waits for the next commit's
  notification, then lets `coalesce_s` (= `poll_s`, 10 ms) pass since the previous pass
  began, so a burst of commits is read in one pass: under load that is at most one pass
  per 10 ms, as with polling, and an idle projector sends no query at all except a
  safety-net pass every `_LISTENING_IDLE_S` (1 s), which also covers notifications lost
  while the listener reconnects.
- Otherwise (SQLite, or while the listener is down) it polls with an adaptive sleep:
  `poll_s` right after work, growing with the time idle (a quarter of it) up to
  `_MAX_IDLE_POLL_S` (100 ms). Under load the projector is never idle for long, so it
  keeps the short poll; an idle projector polls 10 times a second instead of 100, and
  the first event after an idle gap waits at most a quarter of that gap (at most 100 ms).
We chose LISTEN/NOTIFY over adaptive polling alone on PostgreSQL because it gives both
near-zero idle cost and no added latency after an idle gap; eventsourcing already sends
the NOTIFY, and the listener is one thread and one connection. The poll stays as the
fallback because the listener can be down (restarts) and SQLite has no notifications.

One event never stalls the views (the policy; see also README "Decisions worth knowing"):
- What PostgreSQL cannot hold is made fit before it is written: no view text holds a NUL
  (`agentledger.infra.view_store`), and agent, task and session ids are bounded where they
  are keys (`agentledger.projections.base.view_key`).
- A transient error (`StoreUnavailable`: a store unreachable, restarting, a deadlock; or
  a transient `EmbeddingError`: an embeddings endpoint down) is retried with backoff for
  as long as it lasts; nothing is skipped for it.
- Any other error of a pass is retried too; after `_ISOLATE_AFTER` failed passes in a row
  the projections fold the next batch event by event, each event in a transaction of its
  own (`fold_apart`). An event that fails alone, twice, for a reason about the event (a
  value the view store rejects, an error of the projection's code on it, an event that
  cannot be decoded while later ones can) is a poison event: recorded in the poison log
  (`al_poison_log`, `agentledger.infra.poison_log`) in the transaction that moves the
  projection past it, logged as an error with `alert=True`, counted (`poisoned`,
  `on_poison`), and skipped by that projection only. An error about the views' own SQL or
  tables (`is_schema_error`), or an undecodable event with nothing decodable after it (a
  wrong cipher key, code behind the log), fails every event alike: it is never taken for
  a poison event, and the projector keeps retrying loudly instead.
- A rebuild forgets the projection's poison events and meets each again like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import structlog
from eventsourcing.persistence import Notification

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.handlers.log_gaps import LogGaps
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.poison_log import (
    PoisonLog,
    UndecodableEvent,
    UnknownEventTopic,
    alert_poison,
    decode,
    decodes_after,
)
from agentledger.infra.view_store import CommitSignal, ViewStore, is_schema_error
from agentledger.projections.base import Projection, ViewCursor
from agentledger.projections.views import UnknownView

__all__ = [
    "Projector",
    "ProjectorHandle",
    "RebuildInterrupted",
    "UndecodableEvent",
    "UnknownEventTopic",
]

log = structlog.get_logger("agentledger.projector")

Progress = Callable[[int, int], None]
"""Called with (notifications folded so far, notifications to fold)."""

_MAX_BACKOFF_S = 5.0
_MAX_IDLE_POLL_S = 0.1
"""The longest sleep between two polls of an idle log (when no commit signal is heard)."""
_LISTENING_IDLE_S = 1.0
"""The longest wait for a commit notification before passing anyway (safety net)."""
_STOP_CHECK_S = 0.05
"""How often a wait for a notification looks at the stop flag."""
_HINTS_TTL_S = 1.0
"""How long a remembered position may skip a projection's lock (see `Projector._hints`)."""
_ISOLATE_AFTER = 3
"""Failed passes in a row (not counting store outages) before folding event by event."""
_ALONE_ATTEMPTS = 2
"""Times an event is tried alone before it is taken for a poison event."""
_ALONE_RETRY_S = 0.1
_REREADS = 2
"""Extra reads of the log in one pass, after the gap a read stopped at became final."""

OnPoison = Callable[[str], None]
"""Called with the projection's name whenever it skips a poison event."""


class _Alone(Enum):
    """What trying the next event alone came to."""

    APPLIED = "applied"
    SKIPPED = "skipped"
    """A poison event, recorded and skipped."""
    NOTHING = "nothing"
    """No event to apply now (caught up, a gap, or the position moved meanwhile)."""
    DROPPED = "dropped"
    """The projection's tracking row is gone."""


class RebuildInterrupted(Exception):
    """The view being rebuilt was dropped again (by another rebuild) under this one."""


@dataclass(kw_only=True)
class ProjectorHandle:
    """A projector running in a background thread."""

    thread: threading.Thread
    stop_event: threading.Event = field(default_factory=threading.Event)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop after its current batch and wait for it."""
        self.stop_event.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the projector did not stop within {timeout} s")


class Projector:
    """Runs projections over the notification log, with exactly-once tracking."""

    def __init__(
        self,
        store: EventStore,
        views: ViewStore,
        projections: Sequence[Projection],
        batch: int = 500,
        poll_s: float = 0.01,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique, got {names}")
        self.store = store
        self.views = views
        self.projections = tuple(projections)
        self.batch = batch
        self.poll_s = poll_s
        self.coalesce_s = poll_s
        """While listening: the least time from one pass's start to the next's, so that
        commits close together are read in one pass (fewer passes under load)."""
        self.last_error: Exception | None = None
        """The error of the latest failed pass of `run_forever` (None once it recovers)."""
        self._ensured = False
        # Known positions, only a hint to skip idle projections without taking their lock
        # (the tracking row read under the lock is what counts). Forgotten every second, so
        # a view dropped by another process and left half rebuilt is caught up regardless.
        self._hints: dict[str, int] = {}
        self._hints_since = time.monotonic()
        self._gaps = LogGaps(_events_table(store))
        self._read_full = False
        """Whether the latest `run_once` read a whole batch (more may be waiting)."""
        self.poison_log = PoisonLog(views)
        self.poisoned: dict[str, int] = {}
        """Poison events skipped by this projector, per projection."""
        self.on_poison: OnPoison | None = None

    def ensure(self) -> None:
        """Create every projection's tables and tracking row, and the poison log
        (idempotent)."""
        for projection in self.projections:
            self.views.ensure(projection)
        self.poison_log.ensure()
        self._ensured = True

    def run_once(self) -> int:
        """Apply the next batch of notifications to every projection; how many it applied
        (summed over projections).

        All projections that are behind advance in ONE transaction: each one's tracking
        row is locked (in name order, so concurrent projectors cannot deadlock), the
        events after the lowest position are read once, each projection applies those
        past its own position, and every tracking row moves in the same commit.
        """
        if not self._ensured:
            self.ensure()
        self._read_full = False
        head = self.store.max_notification_id()
        if time.monotonic() - self._hints_since > _HINTS_TTL_S:
            self._hints.clear()
            self._hints_since = time.monotonic()
        behind = sorted(
            (p for p in self.projections if self._hints.get(p.name, -1) < head),
            key=lambda p: p.name,
        )
        if not behind:
            return 0
        applied = 0
        moved: dict[str, int] = {}
        with self.views.transaction() as cursor:
            positions = self.views.lock_trackings(cursor, [p.name for p in behind])
            live = [p for p in behind if positions[p.name] is not None]
            if not live:
                return 0  # all dropped under us: whoever dropped them rebuilds them
            start = min(positions[p.name] or 0 for p in live) + 1
            events = self._read(start, cursor)
            self._read_full = len(events) >= self.batch
            advanced: dict[str, int] = {}
            for projection in live:
                position = positions[projection.name] or 0
                mine = [event for notification_id, event in events if notification_id > position]
                if mine:
                    projection.apply_batch(mine, cursor)
                    advanced[projection.name] = events[-1][0]
                    applied += len(mine)
                moved[projection.name] = advanced.get(projection.name, position)
            self.views.set_trackings(cursor, advanced)
        self._hints.update(moved)
        return applied

    def run_forever(self, stop: threading.Event) -> None:
        """Project until `stop` is set; wait for new events when idle (see the module
        docstring), back off on errors.

        A database outage is logged and retried; so is any other error (logged with its
        traceback), so the views stall loudly rather than skip an event or die silently.
        """
        signal = self.views.commit_signal(_notify_channel(self.store))
        try:
            self._run_forever(stop, signal)
        finally:
            if signal is not None:
                signal.close()

    def _run_forever(self, stop: threading.Event, signal: CommitSignal | None) -> None:
        failures = 0
        faults = 0  # failed passes in a row that were not store outages
        idle_since: float | None = None
        while not stop.is_set():
            if signal is not None:
                signal.clear()  # before looking: a commit from now on wakes the next wait
            started = time.monotonic()
            try:
                if faults >= _ISOLATE_AFTER:
                    log.warning("folding the next events one by one to find the one at fault")
                    applied = self.fold_apart()
                    faults = 0
                else:
                    applied = self.run_once()
            except Exception as e:
                failures += 1
                delay = min(_MAX_BACKOFF_S, 0.05 * 2**failures)
                self.last_error = e
                if _transient(e):
                    log.warning(
                        "projector cannot reach a store; retrying", error=str(e), delay_s=delay
                    )
                else:
                    faults += 1
                    log.exception("projection failed; retrying", delay_s=delay)
                stop.wait(delay)
                continue
            failures = faults = 0
            self.last_error = None
            if applied:
                idle_since = None
            listening = signal if signal is not None and signal.listening else None
            if self._gaps.blocked:  # ids still in flight: look again soon
                if listening is not None:
                    _wait(stop, listening, self.poll_s)
                else:
                    stop.wait(self.poll_s)
            elif applied and (self._read_full or listening is None):
                continue  # more may be waiting
            elif listening is not None:
                # Everything committed before this pass began was read: wait for the next
                # commit, then let `coalesce_s` pass since this pass began, so that
                # commits close together are read together.
                _wait(stop, listening, _LISTENING_IDLE_S)
                stop.wait(max(0.0, started + self.coalesce_s - time.monotonic()))
            else:
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                stop.wait(self.idle_poll_s(now - idle_since))

    def idle_poll_s(self, idle_s: float) -> float:
        """The sleep before the next poll after `idle_s` seconds without new events."""
        return max(self.poll_s, min(_MAX_IDLE_POLL_S, idle_s / 4))

    def start_in_thread(self, name: str = "projector") -> ProjectorHandle:
        """Run `run_forever` in a daemon thread; `handle.stop()` ends it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run_forever, args=(stop,), name=name, daemon=True)
        handle = ProjectorHandle(thread=thread, stop_event=stop)
        thread.start()
        return handle

    def wait_until(self, notification_id: int, timeout: float) -> bool:
        """Block until every projection has applied `notification_id` (read-your-writes);
        False if `timeout` seconds pass first. Something must be running the projector."""
        deadline = time.monotonic() + timeout
        while True:
            if self.views.lowest_tracking([p.name for p in self.projections]) >= notification_id:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)

    def lag(self) -> dict[str, int]:
        """Per projection, how many notifications it has still to apply."""
        head = self.store.max_notification_id()
        return {p.name: max(0, head - self.views.tracking(p.name)) for p in self.projections}

    def rebuild(self, name: str, progress: Progress | None = None) -> int:
        """Drop a projection's view and tracking, recreate it and fold the log into it up
        to the log's end at the start of the rebuild; the number of notifications folded.

        Safe while a live projector runs: both advance the same locked tracking row, so
        each notification is still applied once (the live projector may fold some batches).
        Poison events are met as by the live projector (see the module docstring); a store
        outage ends the rebuild with `StoreUnavailable` (run it again).
        """
        projection = self._projection(name)
        target = self.store.max_notification_id()
        self.views.drop(projection)
        self.views.ensure(projection, defer=True)
        self.poison_log.ensure()
        with self.views.transaction() as cursor:
            self.poison_log.forget(cursor, name)
        self._hints.pop(name, None)
        log.info("rebuilding view", view=name, notifications=target)
        position = 0
        faults = 0
        if progress is not None:
            progress(0, target)
        while position < target:
            applied: int | None
            if faults >= _ISOLATE_AFTER:
                applied, faults = self._fold_apart(projection), 0
            else:
                try:
                    applied = self._advance(projection)
                except StoreUnavailable:
                    raise
                except Exception:
                    faults += 1
                    log.exception("rebuilding a view failed; retrying", view=name)
                    time.sleep(_ALONE_RETRY_S * faults)
                    continue
            if applied is None:
                raise RebuildInterrupted(f"the {name} view was dropped while being rebuilt")
            position = self.views.tracking(name)
            if applied == 0 and self._gaps.blocked:
                time.sleep(self.poll_s)  # a gap in the log, still in flight
            if progress is not None:
                progress(min(position, target), target)
        if projection.deferred_ddl:
            # Built once over the folded rows (an interrupted rebuild leaves them to the
            # projector's next start, whose `ensure` makes what is missing).
            log.info("building the view's deferred indexes", view=name)
            self.views.ensure_tables(*projection.deferred_ddl)
        log.info("rebuilt view", view=name, notifications=target)
        return target

    def _projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise UnknownView(name)

    def _advance(self, projection: Projection) -> int | None:
        """One batch for one projection, in one transaction with its tracking record; how
        many events it applied (None if the projection's tracking row is gone)."""
        with self.views.transaction() as cursor:
            position = self.views.lock_tracking(cursor, projection.name)
            if position is None:
                return None  # dropped under us: whoever dropped it rebuilds it
            events = self._read(position + 1, cursor)
            if events:
                projection.apply_batch([event for _, event in events], cursor)
                position = events[-1][0]
                self.views.set_tracking(cursor, projection.name, position)
        self._hints[projection.name] = position
        return len(events)

    def fold_apart(self) -> int:
        """Fold up to one batch into every projection that is behind, event by event, each
        event in a transaction of its own, skipping poison events (see the module
        docstring); how many events were applied or skipped (summed over projections).

        Slow (a transaction per event): the live loop does this only after a batch failed
        `_ISOLATE_AFTER` times, to find the event at fault and go on past it.
        """
        if not self._ensured:
            self.ensure()
        done = 0
        failed: Exception | None = None
        for projection in sorted(self.projections, key=lambda p: p.name):
            try:
                done += self._fold_apart(projection) or 0
            except Exception as e:  # not a poison event: the others still go on
                if _transient(e):
                    raise
                log.exception("projection failed on its own", view=projection.name)
                failed = failed or e
        if failed is not None and not done:
            raise failed
        return done

    def _fold_apart(self, projection: Projection) -> int | None:
        """`fold_apart` for one projection (None if its tracking row is gone)."""
        done = 0
        while done < self.batch:
            outcome = self._apply_alone(projection)
            if outcome is _Alone.DROPPED:
                return None
            if outcome is _Alone.NOTHING:
                break
            done += 1
        return done

    def _apply_alone(self, projection: Projection) -> _Alone:
        """Apply the projection's next event in a transaction of its own; one that fails
        alone `_ALONE_ATTEMPTS` times for a reason about the event is recorded in the poison
        log and skipped."""
        name = projection.name
        error: Exception | None = None
        poison: Notification | None = None
        for attempt in range(_ALONE_ATTEMPTS):
            if attempt:
                time.sleep(_ALONE_RETRY_S)
            applying: Notification | None = None
            try:
                with self.views.transaction() as cursor:
                    position = self.views.lock_tracking(cursor, name)
                    if position is None:
                        return _Alone.DROPPED
                    found = self._notifications(position + 1, cursor, limit=1)
                    if not found:
                        return _Alone.NOTHING
                    applying = found[0]
                    projection.apply_batch([decode(self.store, applying)], cursor)
                    self.views.set_tracking(cursor, name, applying.id)
                self._hints[name] = applying.id
                return _Alone.APPLIED
            except Exception as e:
                if _transient(e):
                    raise
                if applying is None or is_schema_error(e):
                    raise  # not about this event: retried by the caller, never skipped
                if isinstance(e, UndecodableEvent) and not decodes_after(self.store, applying.id):
                    raise  # maybe every event's fault (a wrong key, code behind the log)
                error = e
                poison = applying
        assert error is not None and poison is not None
        return self._skip(name, poison, error)

    def _skip(self, name: str, notification: Notification, error: Exception) -> _Alone:
        """Record `notification` as a poison event of projection `name` and move the
        projection past it, in one transaction."""
        reason = f"{type(error).__name__}: {error}"
        with self.views.transaction() as cursor:
            position = self.views.lock_tracking(cursor, name)
            if position is None:
                return _Alone.DROPPED
            if self._notifications(position + 1, cursor, limit=1) != [notification]:
                return _Alone.NOTHING  # moved meanwhile (another projector): look again
            self.poison_log.record(cursor, name, notification, reason)
            self.views.set_tracking(cursor, name, notification.id)
        self._hints[name] = notification.id
        self.poisoned[name] = self.poisoned.get(name, 0) + 1
        alert_poison(
            "poison event skipped: recorded in al_poison_log", notification, reason, view=name
        )
        if self.on_poison is not None:
            self.on_poison(name)
        return _Alone.SKIPPED

    def _read(self, start: int, cursor: ViewCursor) -> list[tuple[int, object]]:
        """Decoded events from notification `start` on, at most one batch, stopping
        before a gap in the ids that may still fill; `UndecodableEvent` if one of them
        cannot be decoded."""
        return [(n.id, decode(self.store, n)) for n in self._notifications(start, cursor)]

    def _notifications(
        self, start: int, cursor: ViewCursor, limit: int | None = None
    ) -> list[Notification]:
        """Notifications from id `start` on, at most `limit` (a batch), stopping before a
        gap in the ids that may still fill (see `agentledger.handlers.log_gaps`)."""
        limit = self.batch if limit is None else limit
        gaps = self._gaps
        gaps.blocked = False
        gaps.settle(self.views, cursor)
        skipped = gaps.skipped
        found: list[Notification] = []
        expected = start
        for _ in range(1 + _REREADS):
            read_at = time.monotonic()
            stopped_at: int | None = None
            read = self.store.notifications(start=expected, limit=limit - len(found))
            for notification in read:
                if notification.id != expected and not gaps.may_skip(
                    expected,
                    notification.id,
                    horizon=read[-1].id,
                    read_at=read_at,
                    views=self.views,
                    cursor=cursor,
                ):
                    stopped_at = notification.id
                    break
                found.append(notification)
                expected = notification.id + 1
            if stopped_at is None or not gaps.final_since(stopped_at, read_at):
                break
            gaps.blocked = False  # the gap became final since this read began: read again
        if gaps.skipped > skipped:
            log.info(
                "skipped notification ids that no transaction will commit",
                ids=gaps.skipped - skipped,
                below=expected,
            )
        return found


def _transient(error: Exception) -> bool:
    """An outage, retried for as long as it lasts and never taken for a poison event: a
    store unreachable, or an embedder whose cause may pass (an endpoint down)."""
    return isinstance(error, StoreUnavailable) or (
        isinstance(error, EmbeddingError) and error.transient
    )


def _events_table(store: EventStore) -> str:
    """The table eventsourcing's PostgreSQL recorder keeps the events in:
    `<application name>_events`."""
    return f"{store.name.lower()}_events"


def _notify_channel(store: EventStore) -> str:
    """The channel eventsourcing's PostgreSQL recorder NOTIFYs after inserting events:
    its events table name, with dots as underscores."""
    return _events_table(store).replace(".", "_")


def _wait(stop: threading.Event, signal: CommitSignal, timeout: float) -> None:
    """Wait until a commit is signalled, `stop` is set or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or signal.wait(min(remaining, _STOP_CHECK_S)):
            return
