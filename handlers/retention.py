"""Retention: archive finished runs to files, and report what the store holds.

`archive_runs` takes the completed and failed runs that finished more than N days ago
(from the runs view), writes them in batches to history files (`agentledger.domain.history_file`,
each run with the session history it started from, so a file replays on its own),
reads every file back and checks it against the store, and only then removes those
runs' events from the hot store and notes them in the archive log.

Projections are unaffected: archiving never touches a view, so runs, conversations and
metrics keep their rows, and projectors carry on past the removed notification ids. A
later `rebuild` refolds only what is still in the store; `agentledger import` of the
archive files first brings the archived runs back. Sessions are never archived: their
conversation stays whole, so a session can always take another turn.

A run is only removed once every projection has folded all its events, and the event
with the newest notification id is never removed (see `EventStore.delete_aggregates`);
such runs are archived by a later pass.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import structlog
from eventsourcing.domain import Aggregate

from agentledger.domain.event_registry import EVENT_CLASSES
from agentledger.domain.history_file import (
    HistoryDocument,
    HistorySubject,
    decode_aggregate,
    encode_event,
    parse_history,
)
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.export import export_aggregates
from agentledger.infra.archive_log import ArchiveLog
from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import ViewStore
from agentledger.projections.base import iso
from agentledger.projections.runs import RunsProjection
from agentledger.projections.views import ALL_PROJECTIONS

__all__ = [
    "AggregateSize",
    "ArchiveReport",
    "ArchiveVerificationFailed",
    "archive_runs",
    "store_report",
]

log = structlog.get_logger("agentledger.retention")

Progress = Callable[[int, int], None]


class ArchiveVerificationFailed(Exception):
    """An archive file read back does not hold exactly the store's events: nothing of
    that batch was removed."""


@dataclass(frozen=True, kw_only=True)
class ArchiveReport:
    candidates: int
    """Finished runs older than the cut-off and not archived yet."""
    archived_runs: int
    removed_events: int
    files: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Runs left in the store this time: the newest event's, and any whose events a
    projection has not folded yet."""
    dry_run: bool = False


def _write_atomically(path: Path, text: str) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists; an archive file is never overwritten")
    tmp = path.with_suffix(path.suffix + ".part")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _verify(path: Path, store: EventStore) -> HistoryDocument:
    """The document as read back from disk, checked event by event against the store."""
    document = parse_history(path.read_bytes(), str(path))
    for aggregate in document.aggregates:
        stored = store.events(UUID(aggregate.aggregate_id))
        written = decode_aggregate(aggregate)
        if len(written) > len(stored) or any(
            encode_event(a) != encode_event(b) for a, b in zip(written, stored, strict=False)
        ):
            raise ArchiveVerificationFailed(
                f"{path} does not match the store for {aggregate.aggregate_type}"
                f" {aggregate.aggregate_id}; nothing of this batch was removed"
            )
    return document


def archive_runs(
    store: EventStore,
    views: ViewStore,
    out_dir: Path,
    *,
    older_than_days: float,
    now: datetime | None = None,
    batch: int = 500,
    dry_run: bool = False,
    catalog: Catalog | None = None,
    progress: Progress | None = None,
) -> ArchiveReport:
    """Archive the finished runs older than `older_than_days` (see the module docstring)."""
    if older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
    now = now or datetime.now(UTC)
    views.ensure(RunsProjection)
    archive_log = ArchiveLog(views)
    cutoff = iso(now - timedelta(days=older_than_days))
    candidates = archive_log.candidates(cutoff, limit=10**9)
    newest = store.newest_aggregate_id()
    # Only runs every projection has folded entirely: the views must not miss an event.
    # The memory view counts once it exists (it is folded by a projector of its own).
    names = [p.name for p in ALL_PROJECTIONS]
    if views.tracking_exists("memory"):
        names.append("memory")
    horizon = views.lowest_tracking(names)
    last = store.last_notification_ids([UUID(c.run_id) for c in candidates])
    kept = [
        c.run_id
        for c in candidates
        if (newest is not None and UUID(c.run_id) == newest)
        or last.get(UUID(c.run_id), 0) > horizon
    ]
    todo = [c for c in candidates if c.run_id not in kept]
    if dry_run or not todo:
        return ArchiveReport(
            candidates=len(candidates),
            archived_runs=0,
            removed_events=0,
            kept=kept,
            dry_run=dry_run,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Named by the wall clock and a random tag: a file is never overwritten, even by a
    # pass given the same `now`.
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    files: list[str] = []
    archived = removed = 0
    if progress is not None:
        progress(0, len(todo))
    for n, start in enumerate(range(0, len(todo), batch)):
        chunk = todo[start : start + batch]
        present = [c for c in chunk if store.events(UUID(c.run_id), lte=1)]
        gone = [c for c in chunk if c not in present]
        if gone:  # removed by an earlier pass that stopped before noting them
            archive_log.mark([(c.run_id, c.task_id) for c in gone], "(earlier archive)", iso(now))
        if present:
            path = out_dir / f"archive-{stamp}-{n:04d}.json"
            ids = [UUID(c.run_id) for c in present]
            document = export_aggregates(
                store, ids, HistorySubject(kind="archive", id=path.stem), catalog
            )
            _write_atomically(path, document.to_json())
            _verify(path, store)
            removed += store.delete_aggregates(ids)
            archive_log.mark([(c.run_id, c.task_id) for c in present], str(path), iso(now))
            files.append(str(path))
            archived += len(present)
            log.info("archived runs", file=str(path), runs=len(present))
        if progress is not None:
            progress(min(start + batch, len(todo)), len(todo))
    return ArchiveReport(
        candidates=len(candidates),
        archived_runs=archived,
        removed_events=removed,
        files=files,
        kept=kept,
    )


@dataclass(frozen=True, kw_only=True)
class AggregateSize:
    """What one aggregate type takes in the event store."""

    aggregate_type: str
    aggregates: int
    """How many aggregates of this type (counted by their creation events)."""
    events: int
    bytes: int


def store_report(store: EventStore) -> list[AggregateSize]:
    """Events and bytes by aggregate type, largest first (snapshots as their own row)."""
    topics, snapshots = store.topic_sizes()
    by_type: dict[str, list[int]] = {}
    for t in topics:
        parts = t.topic.split(".")
        aggregate_type = parts[1] if len(parts) >= 3 else t.topic
        row = by_type.setdefault(aggregate_type, [0, 0, 0])
        if _is_creation(t.topic):
            row[0] += t.events
        row[1] += t.events
        row[2] += t.bytes
    sizes = [
        AggregateSize(aggregate_type=k, aggregates=v[0], events=v[1], bytes=v[2])
        for k, v in by_type.items()
    ]
    sizes.sort(key=lambda s: (-s.bytes, s.aggregate_type))
    if snapshots is not None:
        sizes.append(
            AggregateSize(
                aggregate_type="(snapshots)",
                aggregates=0,
                events=snapshots.events,
                bytes=snapshots.bytes,
            )
        )
    return sizes


_CREATION_TOPICS: frozenset[str] = frozenset(
    str(getattr(cls, "TOPIC", "")) for cls in EVENT_CLASSES if issubclass(cls, Aggregate.Created)
)
"""Every aggregate's first event (one per aggregate), from the event registry: a new
aggregate type counts without a list here to keep up to date."""


def _is_creation(topic: str) -> bool:
    return topic in _CREATION_TOPICS


def archived_files(paths: Sequence[Path]) -> list[Path]:
    """The archive files among `paths` (a directory's, or given), in name order."""
    found: list[Path] = []
    for path in paths:
        found += sorted(path.glob("archive-*.json")) if path.is_dir() else [path]
    return found
