"""The projector: folds the event store's notification log into the views, exactly once.

For each projection, one view-store transaction locks its tracking row, reads the
notifications after it, applies them and moves the row to the last one; so a batch
is applied whole or not at all, and two projectors (the live one and a rebuild, or two
processes) never apply the same notification twice: the second waits for the row and
then starts where the first stopped.

The log is read in notification-id order, but ids are drawn before their transactions
commit, and not always committed in that order: a reader can see id n + 1 while n is
still in flight, or never see n (its transaction rolled back). A read therefore stops
before a gap in the ids until the gap is known to be for ever (`_Gaps`), so no event is
skipped because it committed a moment late.

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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from eventsourcing.utils import TopicError

from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.view_store import CommitSignal, ViewStore
from agentledger.projections.base import Projection, ViewCursor
from agentledger.projections.views import UnknownView

__all__ = ["Projector", "ProjectorHandle", "RebuildInterrupted", "UnknownEventTopic"]

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
_GAP_WARN_S = 10.0
"""A gap in the notification ids still in flight after this long is logged."""
_HINTS_TTL_S = 1.0
"""How long a remembered position may skip a projection's lock (see `Projector._hints`)."""


class UnknownEventTopic(Exception):
    """A stored event's topic names no known event class: deploy the code that wrote it
    (or register the old topic) before projecting further. Never skipped."""

    def __init__(self, topic: str, notification_id: int) -> None:
        super().__init__(
            f"notification {notification_id} has event topic {topic!r}, which names no known"
            " event class; the projector stops here until the topic is registered"
        )
        self.topic = topic
        self.notification_id = notification_id


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
        self._gaps = _Gaps(_events_table(store))
        self._read_full = False
        """Whether the latest `run_once` read a whole batch (more may be waiting)."""

    def ensure(self) -> None:
        """Create every projection's tables and tracking row (idempotent)."""
        for projection in self.projections:
            self.views.ensure(projection)
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
        idle_since: float | None = None
        while not stop.is_set():
            if signal is not None:
                signal.clear()  # before looking: a commit from now on wakes the next wait
            started = time.monotonic()
            try:
                applied = self.run_once()
            except Exception as e:
                failures += 1
                delay = min(_MAX_BACKOFF_S, 0.05 * 2**failures)
                self.last_error = e
                if isinstance(e, StoreUnavailable):
                    log.warning(
                        "projector cannot reach a store; retrying", error=str(e), delay_s=delay
                    )
                else:
                    log.exception("projection failed; retrying", delay_s=delay)
                stop.wait(delay)
                continue
            failures = 0
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
        """
        projection = self._projection(name)
        target = self.store.max_notification_id()
        self.views.drop(projection)
        self.views.ensure(projection)
        self._hints.pop(name, None)
        log.info("rebuilding view", view=name, notifications=target)
        position = 0
        if progress is not None:
            progress(0, target)
        while position < target:
            applied = self._advance(projection)
            if applied is None:
                raise RebuildInterrupted(f"the {name} view was dropped while being rebuilt")
            position = self.views.tracking(name)
            if applied == 0 and self._gaps.blocked:
                time.sleep(self.poll_s)  # a gap in the log, still in flight
            if progress is not None:
                progress(min(position, target), target)
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

    def _read(self, start: int, cursor: ViewCursor) -> list[tuple[int, object]]:
        """Decoded events from notification `start` on, at most one batch, stopping
        before a gap in the ids that may still fill (see `_Gaps`)."""
        self._gaps.blocked = False
        self._gaps.settle(self.views, cursor)
        read_at = time.monotonic()
        events: list[tuple[int, object]] = []
        expected = start
        for notification in self.store.notifications(start=start, limit=self.batch):
            if notification.id != expected and not self._gaps.may_skip(
                expected, notification.id, read_at, self.views, cursor
            ):
                break
            self._gaps.filled(notification.id)
            try:
                event = self.store.decode(notification)
            except TopicError:
                raise UnknownEventTopic(notification.topic, notification.id) from None
            events.append((notification.id, event))
            expected = notification.id + 1
        return events


@dataclass(kw_only=True)
class _Gap:
    """Notification ids [first, end) found missing while `end` was committed."""

    first: int
    end: int
    seen_at: float
    writers: frozenset[str] | None = None
    """The transactions inserting events when the gap was seen a second time: whoever
    drew an id of the gap is one of them, or has finished already."""
    settled_at: float | None = None
    """When none of `writers` was inserting any more: a read after this that still
    misses the ids will never see them (their transactions rolled back)."""
    warned: bool = False


class _Gaps:
    """Gaps in the notification log, and whether each may still fill.

    Notification ids are drawn from a sequence when a transaction inserts its events, but
    transactions commit in their own order (eventsourcing's PostgreSQL database functions
    do not lock the table), so a reader can see id n + 1 committed while n is still in
    flight; and a transaction that rolls back leaves its ids unused for ever. A reader
    that moved past n would never apply it. So a read stops before a gap until the gap is
    known to be for ever: the second time it is seen, the transactions then inserting
    (`ViewStore.event_writers`) are noted; once none of them is inserting any more, a
    read that still misses the ids skips them. A gap that fills meanwhile is simply read.
    SQLite serialises its writers, so there its gaps are skipped at once.

    Shared by the live loop and a rebuild in another thread, hence the lock.
    """

    _KEEP = 4096
    """Gaps remembered (the oldest are forgotten first)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._gaps: dict[int, _Gap] = {}
        self._lock = threading.Lock()
        self.blocked = False
        """Whether the latest read stopped before a gap (then poll again soon)."""

    def settle(self, views: ViewStore, cursor: ViewCursor) -> None:
        """Before a read: settle the gaps none of whose writers is inserting any more."""
        with self._lock:
            pending = [g for g in self._gaps.values() if g.writers is not None and not g.settled_at]
        if not pending:
            return
        writers = views.event_writers(cursor, self.table) or frozenset()
        now = time.monotonic()
        with self._lock:
            for gap in pending:
                if not gap.writers or not (gap.writers & writers):
                    gap.settled_at = now

    def may_skip(
        self, first: int, end: int, read_at: float, views: ViewStore, cursor: ViewCursor
    ) -> bool:
        """Whether a read begun at `read_at` that finds ids [first, end) missing may move
        past them; False means: stop before them for now."""
        if not views.sees_event_writers:
            return True
        capture = False
        with self._lock:
            gap = self._gaps.get(first)
            if gap is not None and gap.settled_at is not None and gap.settled_at < read_at:
                log.info(
                    "skipping notification ids that no transaction will commit",
                    first=first,
                    last=end - 1,
                )
                return True
            self.blocked = True
            if gap is None:
                if len(self._gaps) >= self._KEEP:
                    del self._gaps[next(iter(self._gaps))]
                self._gaps[first] = _Gap(first=first, end=end, seen_at=read_at)
            elif gap.writers is None:
                capture = True
            elif read_at - gap.seen_at > _GAP_WARN_S and not gap.warned:
                gap.warned = True
                log.warning(
                    "waiting for notification ids that a transaction still in flight drew",
                    first=first,
                    last=end - 1,
                    waited_s=round(read_at - gap.seen_at, 1),
                )
        if capture and gap is not None:
            writers = views.event_writers(cursor, self.table) or frozenset()
            with self._lock:
                gap.writers = writers
        return False

    def filled(self, notification_id: int) -> None:
        """Forget a gap (not known to be for ever) whose first id turned up."""
        gap = self._gaps.get(notification_id)
        if gap is not None and gap.settled_at is None:
            with self._lock:
                self._gaps.pop(notification_id, None)


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
