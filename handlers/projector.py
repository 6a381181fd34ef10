"""The projector: folds the event store's notification log into the views, exactly once.

For each projection, one view-store transaction locks its tracking row, reads the
notifications after it, applies them and moves the row to the last one; so a batch
is applied whole or not at all, and two projectors (the live one and a rebuild, or two
processes) never apply the same notification twice: the second waits for the row and
then starts where the first stopped. SQLite has no notifications, so the log is polled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from eventsourcing.utils import TopicError

from infra.event_store import EventStore, StoreUnavailable
from infra.view_store import ViewStore
from projections.base import Projection
from projections.views import UnknownView

__all__ = ["Projector", "ProjectorHandle", "RebuildInterrupted", "UnknownEventTopic"]

log = structlog.get_logger("agentledger.projector")

Progress = Callable[[int, int], None]
"""Called with (notifications folded so far, notifications to fold)."""

_MAX_BACKOFF_S = 5.0
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
        self.last_error: Exception | None = None
        """The error of the latest failed pass of `run_forever` (None once it recovers)."""
        self._ensured = False
        # Known positions, only a hint to skip idle projections without taking their lock
        # (the tracking row read under the lock is what counts). Forgotten every second, so
        # a view dropped by another process and left half rebuilt is caught up regardless.
        self._hints: dict[str, int] = {}
        self._hints_since = time.monotonic()

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
            positions = {p.name: self.views.lock_tracking(cursor, p.name) for p in behind}
            live = [p for p in behind if positions[p.name] is not None]
            if not live:
                return 0  # all dropped under us: whoever dropped them rebuilds them
            start = min(positions[p.name] or 0 for p in live) + 1
            events = self._read(start)
            for projection in live:
                position = positions[projection.name] or 0
                mine = [event for notification_id, event in events if notification_id > position]
                for event in mine:
                    projection.apply(event, cursor)
                if mine:
                    moved[projection.name] = events[-1][0]
                    self.views.set_tracking(cursor, projection.name, events[-1][0])
                    applied += len(mine)
                else:
                    moved[projection.name] = position
        self._hints.update(moved)
        return applied

    def run_forever(self, stop: threading.Event) -> None:
        """Project until `stop` is set; sleep `poll_s` when idle, back off on errors.

        A database outage is logged and retried; so is any other error (logged with its
        traceback), so the views stall loudly rather than skip an event or die silently.
        """
        failures = 0
        while not stop.is_set():
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
            if applied == 0:
                stop.wait(self.poll_s)

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
            if all(self.views.tracking(p.name) >= notification_id for p in self.projections):
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
            position = self.views.tracking(name)
            if applied == 0 and position == 0:
                raise RebuildInterrupted(f"the {name} view was dropped while being rebuilt")
            if progress is not None:
                progress(min(position, target), target)
        log.info("rebuilt view", view=name, notifications=target)
        return target

    def _projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise UnknownView(name)

    def _advance(self, projection: Projection) -> int:
        """One batch for one projection, in one transaction with its tracking record."""
        with self.views.transaction() as cursor:
            position = self.views.lock_tracking(cursor, projection.name)
            if position is None:
                return 0  # dropped under us: whoever dropped it rebuilds it
            events = self._read(position + 1)
            for _, event in events:
                projection.apply(event, cursor)
            if events:
                position = events[-1][0]
                self.views.set_tracking(cursor, projection.name, position)
        self._hints[projection.name] = position
        return len(events)

    def _read(self, start: int) -> list[tuple[int, object]]:
        """Decoded events from notification `start` on, at most one batch."""
        events: list[tuple[int, object]] = []
        for notification in self.store.notifications(start=start, limit=self.batch):
            try:
                event = self.store.decode(notification)
            except TopicError:
                raise UnknownEventTopic(notification.topic, notification.id) from None
            events.append((notification.id, event))
        return events
