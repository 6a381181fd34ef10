"""The export format: recorded histories as versioned JSON, readable without any store.

A history document holds whole aggregates (a run, the session it belongs to, an
archive's runs), each event with its stable topic, its class version and its fields as
plain JSON. Reading one upcasts old event shapes to the current classes exactly as the
event store does, so a file written today replays in every later version.

    {"format": "agentledger-history", "format_version": 1, "exported_at": "...",
     "subject": {"kind": "run", "id": "<task id>"}, "agents": {"calc": "pkg.mod:agent"},
     "aggregates": [{"aggregate_id": "...", "aggregate_type": "AgentRun",
                     "events": [{"version": 1, "topic": "agentledger.AgentRun.RunRequested",
                                 "class_version": 2, "state": {...}}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from eventsourcing.utils import TopicError, get_topic, resolve_topic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentledger.domain.event_registry import EVENT_CLASSES
from agentledger.domain.timeline import plain_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ExportedAggregate",
    "ExportedEvent",
    "HistoryDocument",
    "HistoryFileError",
    "HistorySubject",
    "aggregates_of",
    "decode_aggregate",
    "decode_event",
    "encode_event",
    "exported_aggregate",
    "parse_history",
]

FORMAT: Literal["agentledger-history"] = "agentledger-history"
FORMAT_VERSION = 1
"""The document layout's version (the events inside carry their own class versions)."""

_BASE = ("originator_id", "originator_version")


_KNOWN_TOPICS = frozenset(cls.TOPIC for cls in EVENT_CLASSES)
"""Only agentledger's own event classes are read from a file (a topic names code)."""


class HistoryFileError(ValueError):
    """A history document cannot be read: says which part is wrong and why."""


class ExportedEvent(BaseModel):
    """One stored event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, description="The aggregate version this event produced.")
    topic: str = Field(description="The event's stable topic, e.g. agentledger.AgentRun.X.")
    class_version: int = Field(ge=1, description="The event class's version when written.")
    state: dict[str, Any] = Field(description="The event's fields; timestamp in ISO 8601.")


class ExportedAggregate(BaseModel):
    """All events of one aggregate (or its first events, for context)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aggregate_id: str
    aggregate_type: str
    events: list[ExportedEvent]


class HistorySubject(BaseModel):
    """What was exported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["run", "session", "archive", "graph"]
    id: str


class HistoryDocument(BaseModel):
    """A versioned export of recorded histories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["agentledger-history"] = FORMAT
    format_version: int = FORMAT_VERSION
    exported_at: str
    subject: HistorySubject
    agents: dict[str, str] = Field(
        default_factory=dict, description="Agent name -> catalog ref when exported."
    )
    graphs: dict[str, str] = Field(
        default_factory=dict, description="Graph name -> catalog ref when exported."
    )
    aggregates: list[ExportedAggregate]

    def to_json(self) -> str:
        # pydantic's own serialiser: several times faster than json.dumps with indent.
        return self.model_dump_json(indent=1) + "\n"


def encode_event(domain_event: Any) -> ExportedEvent:
    """A domain event as exported data."""
    state = {k: plain_json(v) for k, v in vars(domain_event).items() if k not in _BASE}
    return ExportedEvent(
        version=int(domain_event.originator_version),
        topic=get_topic(type(domain_event)),
        class_version=getattr(type(domain_event), "class_version", 1),
        state=state,
    )


def decode_event(aggregate_id: str, exported: ExportedEvent) -> Any:
    """The domain event, upcast to the current class version."""
    if exported.topic not in _KNOWN_TOPICS:
        raise HistoryFileError(
            f"event {exported.version} of {aggregate_id} has topic {exported.topic!r},"
            " which names no event class of this version of agentledger"
        )
    try:
        cls = resolve_topic(exported.topic)
    except TopicError:
        raise HistoryFileError(
            f"event {exported.version} of {aggregate_id} has topic {exported.topic!r},"
            " which names no event class of this version of agentledger"
        ) from None
    current = getattr(cls, "class_version", 1)
    if exported.class_version > current:
        raise HistoryFileError(
            f"event {exported.version} of {aggregate_id} ({exported.topic}) is class version"
            f" {exported.class_version}; this agentledger knows up to {current}: upgrade it"
        )
    state = dict(exported.state)
    try:
        state["timestamp"] = datetime.fromisoformat(state["timestamp"])
    except (KeyError, TypeError, ValueError):
        raise HistoryFileError(
            f"event {exported.version} of {aggregate_id} has no valid ISO 8601 timestamp"
        ) from None
    version = exported.class_version
    while version < current:
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    state["originator_id"] = UUID(aggregate_id)
    state["originator_version"] = exported.version
    domain_event = object.__new__(cls)
    object.__setattr__(domain_event, "__dict__", state)
    return domain_event


def exported_aggregate(events: Sequence[Any]) -> ExportedAggregate:
    """The export of one aggregate's events (all of one originator, in order)."""
    if not events:
        raise ValueError("an exported aggregate needs at least one event")
    first = events[0]
    aggregate_type = type(first).__qualname__.rpartition(".")[0] or "Unknown"
    return ExportedAggregate(
        aggregate_id=str(first.originator_id),
        aggregate_type=aggregate_type,
        events=[encode_event(e) for e in events],
    )


def parse_history(text: str | bytes, source: str = "history") -> HistoryDocument:
    """Read a history document; `HistoryFileError` says what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HistoryFileError(f"{source} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HistoryFileError(f"{source} is not an agentledger history (no format {FORMAT!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise HistoryFileError(
            f"{source} has format_version {version!r}; this agentledger reads up to"
            f" {FORMAT_VERSION}: upgrade it"
        )
    try:
        return HistoryDocument.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise HistoryFileError(f"{source}: {where}: {first['msg']}") from None


def decode_aggregate(aggregate: ExportedAggregate) -> list[Any]:
    """The aggregate's domain events, upcast; `HistoryFileError` unless they are its
    versions 1..n in order, all events of its type."""
    versions = [e.version for e in aggregate.events]
    if versions != list(range(1, len(versions) + 1)):
        raise HistoryFileError(
            f"{aggregate.aggregate_type} {aggregate.aggregate_id} has event versions"
            f" {versions[:5]}...; an export holds versions 1..n in order"
        )
    prefix = f"agentledger.{aggregate.aggregate_type}."
    for e in aggregate.events:
        if not e.topic.startswith(prefix):
            raise HistoryFileError(
                f"event {e.version} of {aggregate.aggregate_id} ({e.topic}) is not an event of"
                f" a {aggregate.aggregate_type}"
            )
    return [decode_event(aggregate.aggregate_id, e) for e in aggregate.events]


def aggregates_of(document: HistoryDocument, aggregate_type: str) -> Iterable[ExportedAggregate]:
    return (a for a in document.aggregates if a.aggregate_type == aggregate_type)
