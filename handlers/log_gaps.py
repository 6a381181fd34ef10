"""Gaps in the notification log, and whether a reader may move past them.

Notification ids are drawn from a sequence when a transaction inserts its events, but
transactions commit in their own order (eventsourcing's PostgreSQL database functions do
not lock the table), so a reader can see id n + 1 committed while n is still in flight;
and a transaction that rolls back, or an archive that removes a run's events, leaves ids
missing for ever. A reader that moved past n would never apply it, so a read stops before
a gap until the gap is known to be for ever.

Known how: ids are drawn in order, so every id up to the highest one a read returned (its
horizon) was drawn before that read ended. When a read stops at a gap, the transactions
then inserting events (`ViewStore.event_writers`) are noted with the horizon: whoever drew
an id up to the horizon is one of them or has finished. Once none of them is inserting
(at once, when none was), every id up to the horizon is final, and a read begun after
that moment skips every gap below it, however many there are. After an archive a rebuild
meets one gap per archived run: it skips them all with one extra query of the writers and
one extra read per batch, instead of stalling a few passes at each gap. SQLite serialises
its writers, so there a gap is final at once.

Shared by the live loop and a rebuild in another thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog

from agentledger.infra.view_store import ViewStore
from agentledger.projections.base import ViewCursor

__all__ = ["LogGaps"]

log = structlog.get_logger("agentledger.projector")

_GAP_WARN_S = 10.0
"""A read still stopping at the same gap after this long is logged."""


@dataclass(frozen=True, kw_only=True)
class _Watch:
    """The writers noted when a read stopped at a gap."""

    horizon: int
    """The highest id the read returned: every id up to it was drawn before `writers`
    were noted."""
    writers: frozenset[str]
    """The transactions inserting events then (virtual transaction ids)."""


class LogGaps:
    """Whether a read may move past a gap in the notification ids (see the module
    docstring)."""

    def __init__(self, table: str) -> None:
        self.table = table
        """The event store's table, whose writers `ViewStore.event_writers` reports."""
        self._lock = threading.Lock()
        self._final = 0
        """Every id up to this is final: missing now, missing for ever..."""
        self._final_at = 0.0
        """...for a read begun after this moment (`time.monotonic`)."""
        self._watch: _Watch | None = None
        self._stalled: tuple[int, float, bool] | None = None
        """The first id of the gap reads stop at, since when, whether that was logged."""
        self.blocked = False
        """Whether the latest read stopped before a gap (then read again soon)."""
        self.skipped = 0
        """Ids skipped so far (never committed, or removed)."""

    def settle(self, views: ViewStore, cursor: ViewCursor) -> None:
        """Before a read: if none of the writers noted at the last stop is inserting any
        more, every id up to that stop's horizon is final."""
        with self._lock:
            watch = self._watch
        if watch is None:
            return
        writers = views.event_writers(cursor, self.table) or frozenset()
        if not watch.writers & writers:
            self._finalise(watch)

    def may_skip(
        self,
        first: int,
        end: int,
        *,
        horizon: int,
        read_at: float,
        views: ViewStore,
        cursor: ViewCursor,
    ) -> bool:
        """Whether a read begun at `read_at` that found ids [first, end) missing and ids up
        to `horizon` present may move past the missing ones; False means stop before them
        for now (and see `final_since` to read again at once)."""
        if not views.sees_event_writers:
            self._note_skip(first, end)
            return True
        with self._lock:
            if end - 1 <= self._final and read_at > self._final_at:
                self._stalled = None
                self.skipped += end - first
                return True
            self.blocked = True
            if end - 1 <= self._final:
                return False  # final since this read began: `final_since` says read again
            self._note_stall(first, read_at)
            watching = self._watch is not None
        if not watching:
            writers = views.event_writers(cursor, self.table) or frozenset()
            watch = _Watch(horizon=horizon, writers=writers)
            if writers:
                with self._lock:
                    self._watch = watch
            else:
                self._finalise(watch)  # nobody inserting: final for the next read already
        return False

    def final_since(self, end: int, read_at: float) -> bool:
        """Whether a gap ending before `end` that stopped a read begun at `read_at` has
        become final meanwhile (then read again at once: that read will skip it)."""
        with self._lock:
            return end - 1 <= self._final and self._final_at >= read_at

    def _finalise(self, watch: _Watch) -> None:
        with self._lock:
            if self._watch is None or self._watch is watch:
                self._watch = None
            if watch.horizon > self._final:
                self._final = watch.horizon
                self._final_at = time.monotonic()

    def _note_skip(self, first: int, end: int) -> None:
        with self._lock:
            self.skipped += end - first

    def _note_stall(self, first: int, read_at: float) -> None:
        """Under the lock: remember since when reads stop at the gap starting at `first`;
        log it once when that lasts."""
        if self._stalled is None or self._stalled[0] != first:
            self._stalled = (first, read_at, False)
            return
        _, since, warned = self._stalled
        if not warned and read_at - since > _GAP_WARN_S:
            self._stalled = (first, since, True)
            log.warning(
                "waiting for notification ids that a transaction still in flight drew",
                first=first,
                waited_s=round(read_at - since, 1),
            )
