"""Export and import of recorded histories (the `agentledger.domain.history_file` format).

`export_run` writes a run with the session history it started from, so the file
replays on its own; `export_session` writes a session's conversation and all its runs;
`export_graph_run` writes a graph run with the agent runs of its agent steps.
`import_history` loads a file into another store, atomically, and is idempotent: an
aggregate already there with the same events is skipped, one that holds more of the
same events is left alone, and one whose events differ is a conflict (nothing imported).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from agentledger.domain.conversation import Conversation
from agentledger.domain.history_file import (
    ExportedAggregate,
    HistoryDocument,
    HistorySubject,
    decode_aggregate,
    encode_event,
    exported_aggregate,
)
from agentledger.domain.ids import session_aggregate_id_for
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.graphs.replay import recorded_graph_run
from agentledger.handlers.replay import run_events
from agentledger.infra.event_store import EventStore

__all__ = [
    "ImportConflict",
    "ImportReport",
    "SessionNotFound",
    "export_aggregates",
    "export_graph_run",
    "export_run",
    "export_session",
    "import_history",
]


class SessionNotFound(LookupError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {session_id!r} in the event store")


class ImportConflict(Exception):
    """The target store holds different events for an aggregate of the file."""


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    aggregates: int
    """Aggregates in the file."""
    imported_events: int
    skipped_events: int
    """Events the target store already held."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _agents(catalog: Catalog | None, names: Iterable[str]) -> dict[str, str]:
    if catalog is None:
        return {}
    return {n: catalog.entries[n].ref for n in sorted(set(names)) if n in catalog.entries}


def export_aggregates(
    store: EventStore,
    run_ids: Sequence[UUID],
    subject: HistorySubject,
    catalog: Catalog | None = None,
    whole_sessions: Sequence[str] = (),
) -> HistoryDocument:
    """Runs with the session history each started from (the whole conversation for the
    sessions in `whole_sessions`)."""
    aggregates: list[ExportedAggregate] = []
    needed: dict[str, int] = {s: -1 for s in whole_sessions}  # -1: every event
    agents: list[str] = []
    for run_id in run_ids:
        events = run_events(store, run_id)
        requested = events[0]
        agents.append(requested.agent)
        aggregates.append(exported_aggregate(events))
        if requested.session_id is not None and requested.history_version > 0:
            seen = needed.get(requested.session_id, 0)
            if seen != -1:
                needed[requested.session_id] = max(seen, requested.history_version)
    for session_id, version in sorted(needed.items()):
        events = store.events(
            session_aggregate_id_for(session_id), lte=None if version == -1 else version
        )
        if events:
            aggregates.append(exported_aggregate(events))
    return HistoryDocument(
        exported_at=_now(), subject=subject, agents=_agents(catalog, agents), aggregates=aggregates
    )


def export_run(store: EventStore, run_id: UUID, catalog: Catalog | None = None) -> HistoryDocument:
    """A run and the session history it started from."""
    events = run_events(store, run_id)
    return export_aggregates(
        store, [run_id], HistorySubject(kind="run", id=events[0].task_id), catalog
    )


def export_graph_run(
    store: EventStore, run_id: UUID, catalog: Catalog | None = None
) -> HistoryDocument:
    """A graph run and the agent runs of its agent steps (the file replays on its own)."""
    recorded = recorded_graph_run(store, run_id)
    started = recorded.started
    step_runs = [r.run_id for r in recorded.agent_runs]
    document = export_aggregates(
        store, step_runs, HistorySubject(kind="graph", id=started.task_id), catalog
    )
    graphs = {}
    if catalog is not None and started.graph in catalog.graphs:
        graphs[started.graph] = catalog.graphs[started.graph].ref
    return document.model_copy(
        update={
            "aggregates": [exported_aggregate(list(recorded.events)), *document.aggregates],
            "graphs": graphs,
        }
    )


def export_session(
    store: EventStore,
    session_id: str,
    catalog: Catalog | None = None,
    run_ids: Iterable[UUID] = (),
) -> HistoryDocument:
    """A session's whole conversation and its runs: those that recorded a turn, plus
    `run_ids` (e.g. its failed runs and forks, from the runs view)."""
    conversation = store.events(session_aggregate_id_for(session_id))
    if not conversation:
        raise SessionNotFound(session_id)
    ids: list[UUID] = []
    for e in conversation:
        if isinstance(e, Conversation.TurnRecorded):
            ids.append(UUID(e.run_id))
    ids += [r for r in run_ids if r not in ids]
    return export_aggregates(
        store, ids, HistorySubject(kind="session", id=session_id), catalog, [session_id]
    )


def _same(stored: Any, exported: Any) -> bool:
    return encode_event(stored) == encode_event(exported)


def _in_time_order(events: list[Any]) -> list[Any]:
    """The events merged in timestamp order (the log then reads roughly as it did where
    they were recorded), each aggregate's own events still in version order."""
    slots = sorted(range(len(events)), key=lambda i: events[i].timestamp)
    by_aggregate: dict[Any, list[Any]] = {}
    for e in events:
        by_aggregate.setdefault(e.originator_id, []).append(e)
    for group in by_aggregate.values():
        group.sort(key=lambda e: e.originator_version)
    cursor = {k: iter(v) for k, v in by_aggregate.items()}
    return [next(cursor[events[i].originator_id]) for i in slots]


def import_history(store: EventStore, document: HistoryDocument) -> ImportReport:
    """Load the document's events into `store` in one transaction (see the module
    docstring); `ImportConflict` if the store holds different events for one of them."""
    new: list[Any] = []
    skipped = 0
    for aggregate in document.aggregates:
        events = decode_aggregate(aggregate)
        existing = store.events(UUID(aggregate.aggregate_id))
        for have, want in zip(existing, events, strict=False):
            if not _same(have, want):
                raise ImportConflict(
                    f"{aggregate.aggregate_type} {aggregate.aggregate_id} event"
                    f" {want.originator_version} differs from the one in the target store;"
                    " nothing was imported"
                )
        skipped += min(len(existing), len(events))
        new.extend(events[len(existing) :])
    new = _in_time_order(new)
    if new:
        store.save(*new)
    return ImportReport(
        aggregates=len(document.aggregates), imported_events=len(new), skipped_events=skipped
    )
