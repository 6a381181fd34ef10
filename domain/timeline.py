"""A stored domain event as plain data: for timelines, the relay and exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

__all__ = ["EventRecord", "event_record", "plain_json"]

_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One event of one aggregate, as JSON-friendly data."""

    aggregate_type: str
    """The aggregate class name, e.g. `AgentRun`."""
    aggregate_id: str
    version: int
    """The aggregate version this event produced (1 for the first event)."""
    name: str
    """The event class name, e.g. `ToolCallFinished`."""
    timestamp: str
    """ISO 8601, UTC."""
    data: dict[str, Any]
    """The event's own fields."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "name": self.name,
            "timestamp": self.timestamp,
            "data": self.data,
        }


def plain_json(value: Any) -> Any:
    """A value with UUIDs and datetimes as strings, containers copied (JSON-ready)."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    return value


def event_record(domain_event: Any) -> EventRecord:
    """Plain data of a domain event of any agentledger aggregate."""
    qualname = type(domain_event).__qualname__
    aggregate_type, _, name = qualname.rpartition(".")
    fields = {k: plain_json(v) for k, v in vars(domain_event).items() if k not in _BASE_FIELDS}
    return EventRecord(
        aggregate_type=aggregate_type or "Unknown",
        aggregate_id=str(domain_event.originator_id),
        version=int(domain_event.originator_version),
        name=name,
        timestamp=domain_event.timestamp.isoformat(),
        data=fields,
    )
