"""Fork: branch a recorded run at an event index and continue it live.

The fork is a new run (its own task id) whose first event names its parent and the fork
point, whose next events are copies of the parent's up to that point, and which the
ordinary runner then resumes from those recorded messages with the agent's real model
and tools. It shares the parent's session history but never records a turn in the
session: a branch does not rewrite the conversation it came from.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agentledger.domain.fork import ForkError, ForkPlan, plan_fork
from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun, copy_steps, task_of
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.replay import NotARun, RunNotFound
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict

__all__ = ["ForkResult", "fork_run", "save_fork"]


@dataclass(frozen=True, kw_only=True)
class ForkResult:
    """The fork's ids and how its live continuation ended."""

    run_id: str
    task_id: str
    parent_run_id: str
    at: int
    outcome: RunOutcome


async def save_fork(
    store: AsyncEventStore,
    fork: Any,
    fork_task: str,
    *,
    same_as: Callable[[Any], bool],
    copy: Callable[[], None],
) -> None:
    """Record a new fork aggregate: `copy` its parent's events onto it, then save. When
    its task id already holds a run, that must be the same fork (`same_as` its first
    event), started before and interrupted: it is then resumed, not recorded again."""
    existing = await store.events(fork.id)
    if existing:
        if not same_as(existing[0]):
            raise ForkError(f"task id {fork_task!r} is taken by another run; choose another")
        return
    copy()
    try:
        await store.save(fork)
    except ConcurrencyConflict:
        raise ForkError(f"task id {fork_task!r} was just taken by another run") from None


async def fork_run(
    store: AsyncEventStore,
    runner: AgentRunner,
    parent_run_id: UUID,
    *,
    at: int,
    prompt: str | None = None,
    task_id: str | None = None,
) -> ForkResult:
    """Fork `parent_run_id` after its event `at` (see `agentledger.domain.fork` for the rules),
    record it, and run it live to its end with `runner`. Given the `task_id` of the same
    fork started before (an interrupted `agentledger fork`), it resumes that one."""
    parent = await store.events(parent_run_id)
    if not parent:
        raise RunNotFound(str(parent_run_id))
    if not isinstance(parent[0], AgentRun.RunRequested):
        raise NotARun(f"{parent_run_id} is not a run")
    plan: ForkPlan = plan_fork(parent, at, prompt)
    requested = parent[0]
    fork_task = task_id or f"{requested.task_id[:150]}-fork-{uuid.uuid4().hex[:8]}"
    # Validated (the fork's task id too) before anything is recorded. The parent's
    # deadline belonged to the parent's task: a fork runs now.
    task = RunAgent.model_validate(
        {
            **task_of(requested).model_dump(),
            "task_id": fork_task,
            "prompt": plan.prompt,
            "deadline": None,
        }
    )
    fork = AgentRun(
        task_id=fork_task,
        agent=requested.agent,
        prompt=plan.prompt,
        session_id=requested.session_id,
        metadata=dict(requested.metadata),
        usage_limits=dict(requested.usage_limits),
        deadline=None,
        history_version=requested.history_version,
        parent_run_id=str(parent_run_id),
        fork_at=plan.at,
        fork_prompt=plan.fork_prompt,
    )
    assert fork.id == run_id_for(fork_task)
    await save_fork(
        store,
        fork,
        fork_task,
        same_as=lambda first: (
            isinstance(first, AgentRun.RunRequested)
            and (first.parent_run_id, first.fork_at, first.fork_prompt, first.prompt)
            == (str(parent_run_id), plan.at, plan.fork_prompt, plan.prompt)
        ),
        copy=lambda: copy_steps(fork, plan.copied),
    )
    outcome = await runner.run(task, final_attempt=True)
    return ForkResult(
        run_id=str(fork.id),
        task_id=fork_task,
        parent_run_id=str(parent_run_id),
        at=plan.at,
        outcome=outcome,
    )
