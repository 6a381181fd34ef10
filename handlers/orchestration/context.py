"""What the task being run is, for code running inside it (the scratchpad tools).

`AgentRunner` sets it around each run it drives; tools read it with
`current_task_context()` (None outside a run driven by a worker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from agentledger.domain.tasks import RunAgent
from agentledger.infra.event_store import AsyncEventStore

__all__ = ["TaskContext", "current_task_context", "task_context"]


@dataclass(frozen=True)
class TaskContext:
    task: RunAgent
    store: AsyncEventStore


_CURRENT: ContextVar[TaskContext | None] = ContextVar("agentledger_task", default=None)


def current_task_context() -> TaskContext | None:
    return _CURRENT.get()


@contextmanager
def task_context(task: RunAgent, store: AsyncEventStore) -> Iterator[None]:
    token = _CURRENT.set(TaskContext(task, store))
    try:
        yield
    finally:
        _CURRENT.reset(token)
