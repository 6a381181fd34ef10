"""Resolving a paused run: a person decides what a side-effecting tool call whose effect
is unknown after a crash does, and the run goes on.

`resolve_paused_run` records `ToolCallResolved` on the run (`retry`: run the call again;
`fail`: fail it with a message, and so the run; `result`: take a value as its result)
and publishes the run's task again (same task id, a new `Nats-Msg-Id`), so any worker
resumes the run from its record. `agentledger tool resolve` is the command for it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from nats.js import JetStreamContext

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun, task_of
from agentledger.domain.subjects import task_subject
from agentledger.infra.event_store import ConcurrencyConflict, EventStore

__all__ = ["NotPaused", "Resolution", "resolve_paused_run"]

Resolution = Literal["retry", "fail", "result"]


class NotPaused(LookupError):
    """The task has no run, or its run is not paused."""


async def resolve_paused_run(
    store: EventStore,
    js: JetStreamContext,
    prefix: str,
    task_id: str,
    resolution: Resolution,
    value: Any = None,
    *,
    by: str = "operator",
) -> AgentRun:
    """Record the resolution and requeue the task; returns the resolved run."""
    run = store.get(run_id_for(task_id), AgentRun)
    if run is None:
        raise NotPaused(f"no run for task {task_id!r}")
    if run.status != "paused":
        raise NotPaused(f"the run of task {task_id!r} is {run.status}, not paused")
    if resolution == "fail":
        value = str(value or "failed by a person after a crash left its effect unknown")
    run.resolve_tool_call(resolution, value, by)
    try:
        store.save(run)
    except ConcurrencyConflict:
        raise NotPaused(f"the run of task {task_id!r} changed meanwhile: try again") from None
    requested = store.events(run.id, lte=1)[0]
    assert isinstance(requested, AgentRun.RunRequested)
    task = task_of(requested)
    await js.publish(
        task_subject(prefix, task.agent),
        task.model_dump_json().encode(),
        headers={"Nats-Msg-Id": f"{task_id}:resolved:{run.version}"},
    )
    return run


def parse_result(text: str) -> Any:
    """A `--result` value: JSON if it parses, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text
