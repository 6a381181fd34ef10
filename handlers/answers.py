"""How the worker answers a task: outcomes on `<prefix>.results.<task_id>` (and the
reply subject), and rejections recorded as `TaskRejected` events."""

from __future__ import annotations

from typing import Any

import structlog
from faststream.nats import NatsBroker

from agentledger.domain.graphs.tasks import ChildDone, GraphOutcome
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.domain.orchestration.messages import PARENT_KEY
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.subjects import (
    graph_child_subject,
    reply_subject_problem,
    results_subject,
)
from agentledger.domain.tasks import RunAgent, RunError, RunOutcome
from agentledger.handlers.intake import RawTask, Rejection
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict, StoreUnavailable

__all__ = ["TaskAnswers", "checked_reply_subject"]

log = structlog.get_logger("agentledger.worker")


def checked_reply_subject(prefix: str, requested: str | None, bound: Any) -> str | None:
    """The `Agentledger-Reply-To` header if it is a subject we may answer on; else None
    (the task still runs and its outcome is still stored on its own results subject).
    A reply subject is an address the sender picks: never one of ours (another task's
    results, a task subject), never `$JS.`/`$SYS.`, never a string that would break the
    connection (over-long, spaces, control characters)."""
    if requested is None:
        return None
    problem = reply_subject_problem(prefix, requested)
    if problem is None:
        return requested
    bound.warning("ignoring the reply subject", reason=problem, reply_to=requested[:80])
    return None


class TaskAnswers:
    """Publishes outcomes and records rejections for one worker."""

    def __init__(self, *, broker: NatsBroker, store: AsyncEventStore, prefix: str) -> None:
        self.broker = broker
        self.store = store
        self.prefix = prefix

    async def speaks_for(self, rejection: Rejection, raw: RawTask) -> bool:
        """May this rejection be stored as task T's outcome? Not when the message's
        `Nats-Msg-Id` names another message, nor when T has a run: a malformed message
        merely claiming T's id must never replace the outcome of the real T (an agent
        run or a graph run)."""
        task_id = rejection.task_id
        if task_id is None or raw.msg_id not in (None, task_id):
            return False
        try:
            # Agent and graph tasks share task ids and results subjects: a run of either
            # kind owns the subject.
            for run_id in (run_id_for(task_id), graph_run_id_for(task_id)):
                if await self.store.events(run_id, lte=1):
                    return False
        except StoreUnavailable:
            return False
        return True

    async def record_rejection(self, rejection: Rejection, raw: RawTask) -> RunOutcome:
        record = TaskRejection(
            key=rejection.key,
            task_id=rejection.task_id,
            agent=rejection.agent,
            subject=raw.subject,
            error_kind=str(rejection.kind),
            reason=rejection.reason,
            payload_excerpt=raw.excerpt(),
        )
        try:
            await self.store.save(record)
        except ConcurrencyConflict:
            pass  # already recorded by an earlier delivery of the same message
        log.warning(
            "task rejected",
            key=rejection.key,
            task_id=rejection.task_id,
            error_kind=str(rejection.kind),
            reason=rejection.reason,
        )
        return RunOutcome(
            task_id=rejection.task_id,
            run_id=str(record.id),
            agent=rejection.agent,
            status="rejected",
            error=RunError(kind=str(rejection.kind), message=rejection.reason, retryable=False),
        )

    async def _child_done(self, task: RunAgent, outcome: RunOutcome) -> None:
        """If `task` is a child a graph run dispatched (`call_agents`), report its outcome
        to that run (`<prefix>.tasks.graph.child`; once per child and ending)."""
        parent = task.metadata.get(PARENT_KEY)
        if not parent or outcome.status == "paused":
            return  # a paused child has not ended: its parent keeps waiting
        try:
            done = ChildDone(task_id=parent, child_task_id=task.task_id, outcome=outcome)
        except ValueError:
            return  # not an id: not a child any graph run dispatched
        kind = outcome.error.kind if outcome.error else ""
        await self.broker.connection.jetstream().publish(
            graph_child_subject(self.prefix),
            done.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"child:{task.task_id}:{outcome.status}:{kind}"},
        )

    async def publish(
        self,
        outcome: RunOutcome | GraphOutcome,
        reply_to: str | None,
        *,
        store: bool = True,
        task: RunAgent | None = None,
    ) -> None:
        """Publish the outcome on `<prefix>.results.<task_id>` (kept, last one per task)
        unless `store` is false, and to the reply subject if there is one; when `task`
        (whose outcome it is) is a child of a graph run, report it to that run too.

        The results stream drops a republished identical outcome (a redelivery of a
        finished task) by its `Nats-Msg-Id`, which names the run and its ending: a
        different outcome for the same task (a retried dead letter that completes) is
        never dropped as a duplicate of the earlier one.
        """
        payload = outcome.model_dump_json().encode()
        nc = self.broker.connection
        if store and outcome.task_id is not None:
            js = nc.jetstream()
            kind = outcome.error.kind if outcome.error else ""
            paused_for = getattr(outcome, "paused_for", None)  # RunOutcome only
            if paused_for is not None:
                kind = paused_for.tool_call_id  # each pause of a run is news
            await js.publish(
                results_subject(self.prefix, outcome.task_id),
                payload,
                headers={"Nats-Msg-Id": f"outcome:{outcome.run_id}:{outcome.status}:{kind}"},
            )
        if reply_to:
            await nc.publish(reply_to, payload)
        if task is not None and isinstance(outcome, RunOutcome):
            await self._child_done(task, outcome)
