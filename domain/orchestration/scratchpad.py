"""A workflow's shared scratchpad (issue 11): key/value, event-sourced.

One `Scratchpad` per workflow (its id from the workflow's task id). Every participant
reads and writes it through tools; every write is an event (`ValueWritten`,
`ValueDeleted`) naming its writer, so the pad at any point can be rebuilt and who wrote
what is on record.

Concurrent writers are resolved by optimistic concurrency, twice over:
- the store refuses a save made from a stale copy of the pad (the aggregate version);
- a write may name the revision of the key it read (`expected`: the pad's version when
  the key was last written, 0 for a key never written): `write` raises
  `ScratchpadConflict` if the key changed since, so a read-modify-write never loses
  another participant's update. A caller reloads and tries again.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from agentledger.domain.tasks import ID_PATTERN

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_VALUE_CHARS",
    "Scratchpad",
    "ScratchpadConflict",
    "scratchpad_id_for",
]

_SCRATCHPAD_NAMESPACE = UUID("2f6b8d14-97c3-4e5a-8b1d-0c7e6a5f4d39")
MAX_KEY_CHARS = 200
KEY_PATTERN = ID_PATTERN
"""Keys are ids: 1 to 200 of A-Z a-z 0-9 _ - :."""
MAX_VALUE_CHARS = 32_768
"""A value, as JSON, at most this long."""
MAX_KEYS = 1_000

JSON = Any


def scratchpad_id_for(workflow_id: str) -> UUID:
    return uuid5(_SCRATCHPAD_NAMESPACE, workflow_id)


class ScratchpadConflict(Exception):
    """The key changed since the revision the writer read: reload and try again."""


def _checked(key: str, value: JSON) -> None:

    if not isinstance(key, str) or not re.fullmatch(KEY_PATTERN, key):
        raise ValueError(f"a scratchpad key is 1 to {MAX_KEY_CHARS} of A-Z a-z 0-9 _ - : ({key!r})")
    try:
        size = len(json.dumps(value, allow_nan=False, ensure_ascii=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"a scratchpad value must be JSON: {e}") from None
    if size > MAX_VALUE_CHARS:
        raise ValueError(f"the value is {size:,} characters as JSON; at most {MAX_VALUE_CHARS:,}")


class Scratchpad(Aggregate):
    """The shared key/value context of one workflow."""

    TOPIC = "agentledger.Scratchpad"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.Scratchpad.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.Scratchpad.Created"

    class ScratchpadOpened(Created):
        TOPIC = "agentledger.Scratchpad.ScratchpadOpened"
        class_version = 1
        workflow_id: str

    class ValueWritten(Event):
        TOPIC = "agentledger.Scratchpad.ValueWritten"
        class_version = 1
        key: str
        value: JSON
        writer: str

    class ValueDeleted(Event):
        TOPIC = "agentledger.Scratchpad.ValueDeleted"
        class_version = 1
        key: str
        writer: str

    @staticmethod
    def create_id(workflow_id: str) -> UUID:
        return scratchpad_id_for(workflow_id)

    @event(ScratchpadOpened)
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.values: dict[str, JSON] = {}
        self.revisions: dict[str, int] = {}
        """Per key: the pad's version when the key was last written or deleted."""

    def read(self, key: str) -> tuple[JSON, int]:
        """(value or None, revision: 0 for a key never written)."""
        return self.values.get(key), self.revisions.get(key, 0)

    def _expect(self, key: str, expected: int | None) -> None:
        if expected is not None and self.revisions.get(key, 0) != expected:
            raise ScratchpadConflict(
                f"key {key!r} is at revision {self.revisions.get(key, 0)}, not {expected}:"
                " another participant wrote it; read it again"
            )

    def write(self, key: str, value: JSON, writer: str, expected: int | None = None) -> None:
        """Set `key`; with `expected`, only if the key is still at that revision."""
        _checked(key, value)
        self._expect(key, expected)
        if key not in self.values and len(self.values) >= MAX_KEYS:
            raise ValueError(f"a scratchpad holds at most {MAX_KEYS:,} keys")
        self._written(key=key, value=value, writer=writer)

    def delete(self, key: str, writer: str, expected: int | None = None) -> None:
        self._expect(key, expected)
        if key in self.values:
            self._deleted(key=key, writer=writer)

    @event(ValueWritten)
    def _written(self, key: str, value: JSON, writer: str) -> None:
        self.values[key] = value
        self.revisions[key] = self.version + 1

    @event(ValueDeleted)
    def _deleted(self, key: str, writer: str) -> None:
        self.values.pop(key, None)
        self.revisions[key] = self.version + 1
