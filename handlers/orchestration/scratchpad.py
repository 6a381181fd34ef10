"""The workflow scratchpad as tools: every participant of a workflow reads and writes
the same key/value pad (`domain/orchestration/scratchpad.py`, event-sourced).

Give an agent `scratchpad_toolset()` (`Agent(..., toolsets=[scratchpad_toolset()])`).
When it runs as a child task of a workflow, its tools act on that workflow's pad (the
task's `correlation_id`); outside a workflow they answer with an error the model can
read. The tools:

- `scratchpad_read(key)` -> `{"key", "value", "revision"}` (revision 0: never written);
- `scratchpad_write(key, value, expected_revision=None)` -> `{"key", "revision"}`; with
  `expected_revision` (what `scratchpad_read` returned) the write only happens if no
  one wrote the key since: otherwise `{"conflict": ..., "value", "revision"}` with what
  is there now, to merge and try again (optimistic concurrency);
- `scratchpad_keys()` -> the keys and their revisions.

Writes by two participants at once to different keys both land (a save from a stale
copy of the pad is retried on a fresh one); to the same key, `expected_revision` says
who was first. Tool calls are recorded like any other, so a replay serves their results
and never touches the pad.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai.toolsets import FunctionToolset

from agentledger.domain.orchestration.messages import CORRELATION_KEY
from agentledger.domain.orchestration.scratchpad import (
    Scratchpad,
    ScratchpadConflict,
    scratchpad_id_for,
)
from agentledger.handlers.orchestration.context import current_task_context
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict

__all__ = ["ScratchpadStore", "scratchpad_toolset"]

_RETRIES = 20


class ScratchpadStore:
    """Reads and writes one workflow's pad on the event store."""

    def __init__(self, store: AsyncEventStore, workflow_id: str) -> None:
        self._store = store
        self.workflow_id = workflow_id

    async def load(self) -> Scratchpad | None:
        return await self._store.get(scratchpad_id_for(self.workflow_id), Scratchpad)

    async def read(self, key: str) -> tuple[Any, int]:
        pad = await self.load()
        return (None, 0) if pad is None else pad.read(key)

    async def write(self, key: str, value: Any, writer: str, expected: int | None = None) -> int:
        """The key's new revision; `ScratchpadConflict` if `expected` is stale."""
        for _ in range(_RETRIES):
            pad = await self.load()
            if pad is None:
                pad = Scratchpad(workflow_id=self.workflow_id)
            pad.write(key, value, writer, expected)
            try:
                await self._store.save(pad)
            except ConcurrencyConflict:
                continue  # someone saved the pad meanwhile: try on a fresh copy
            return pad.read(key)[1]
        raise ConcurrencyConflict(f"the scratchpad of {self.workflow_id!r} kept changing")


def _pad() -> tuple[ScratchpadStore, str] | dict[str, str]:
    context = current_task_context()
    if context is None or CORRELATION_KEY not in context.task.metadata:
        return {"error": "there is no scratchpad here: this run is not part of a workflow"}
    task = context.task
    return ScratchpadStore(
        context.store, task.metadata[CORRELATION_KEY]
    ), f"{task.agent}:{task.task_id}"


async def scratchpad_read(key: str) -> dict[str, Any]:
    """Read `key` from the workflow's shared scratchpad (revision 0: never written)."""
    found = _pad()
    if isinstance(found, dict):
        return found
    pad, _writer = found
    value, revision = await pad.read(key)
    return {"key": key, "value": value, "revision": revision}


async def scratchpad_write(
    key: str, value: Any, expected_revision: int | None = None
) -> dict[str, Any]:
    """Write `value` (JSON) under `key` in the workflow's shared scratchpad. Pass the
    revision you read as `expected_revision` to write only if no one changed it since."""
    found = _pad()
    if isinstance(found, dict):
        return found
    pad, writer = found
    try:
        revision = await pad.write(key, value, writer, expected_revision)
    except ScratchpadConflict as e:
        now, current = await pad.read(key)
        return {"conflict": str(e), "key": key, "value": now, "revision": current}
    except ValueError as e:
        return {"error": str(e)}
    return {"key": key, "revision": revision}


async def scratchpad_keys() -> dict[str, Any]:
    """The keys in the workflow's shared scratchpad, with their revisions."""
    found = _pad()
    if isinstance(found, dict):
        return found
    pad, _writer = found
    loaded = await pad.load()
    return {"keys": {} if loaded is None else dict(sorted(loaded.revisions.items()))}


def scratchpad_toolset() -> FunctionToolset[Any]:
    """The scratchpad tools, for `Agent(..., toolsets=[scratchpad_toolset()])`."""
    return FunctionToolset([scratchpad_read, scratchpad_write, scratchpad_keys])
