"""Runs graph tasks on the event store: start, resume after a pause, cancel.

The transport-free half of graph tasks (the NATS consumer calls it, as the agent worker
calls `AgentRunner`). A graph run is created from the task (its id derived from the task
id, so a duplicate lands on the same run), then driven by `GraphExecutor`: recorded steps
are served, the others run and are checkpointed. A redelivered task resumes the run; a
finished one returns its stored outcome.

Agent steps (`agent_step(...)` inside a step) run as recorded agent runs through
`AgentRunner`, with a task id derived from the graph's task id and the step's key, so a
re-executed agent step resumes its own agent run instead of starting over. The agent
run's metadata links it to the graph run (`graph_task_id`, `graph_step`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from agentledger.domain.errors import ErrorKind, first_problem
from agentledger.domain.graphs.run import GraphHistory, GraphRun, GraphRunStatus, graph_run_of
from agentledger.domain.graphs.tasks import (
    CancelGraph,
    ChildDone,
    GraphOutcome,
    ResumeGraph,
    RunGraph,
    WaitingFor,
)
from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.orchestration.flow import (
    caused_by,
    request_message,
    response_message,
)
from agentledger.domain.orchestration.messages import (
    CAUSATION_KEY,
    CORRELATION_KEY,
    PARENT_KEY,
    AgentMessage,
)
from agentledger.domain.tasks import RunAgent, RunError
from agentledger.handlers.graphs.catalog import GraphEntry
from agentledger.handlers.graphs.executor import (
    GraphDiverged,
    GraphExecutor,
    GraphPausedForInput,
    GraphWaitingForChildren,
    StepLimitExceeded,
)
from agentledger.infra.event_store import (
    AsyncEventStore,
    ConcurrencyConflict,
    RunSuperseded,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from agentledger.handlers.catalog import Catalog
    from agentledger.handlers.runner import AgentRunner

__all__ = [
    "AgentStepFailed",
    "ChildDispatcher",
    "GraphRejected",
    "GraphRunner",
    "graph_outcome_of",
]

log = structlog.get_logger("agentledger.graphs")

Guard = Callable[[], None]
"""A run lease's check (`Lease.check`), called before each live step."""


class GraphRejected(Exception):
    """The graph task cannot be taken (recorded as a rejection by the caller)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class AgentStepFailed(Exception):
    """An agent step's run ended as failed."""


def graph_outcome_of(run: GraphRun) -> GraphOutcome:
    """A run's outcome as it stands (completed, failed, paused, or running)."""
    status = run.status
    error = None
    if status == "failed":
        error = RunError(kind=run.error_kind or "internal_error", message=run.error_message or "")
    waiting = None
    if status == "paused" and run.paused_key is not None:
        waiting = WaitingFor(node=run.paused_node or "", prompt=run.paused_prompt)
    return GraphOutcome(
        task_id=run.task_id,
        run_id=str(run.id),
        graph=run.graph,
        status=status if status != "running" else "failed",
        output=run.output,
        waiting_for=waiting,
        steps=run.steps,
        duration_ms=run.duration_ms,
        error=error,
    )


def agent_step_task_id(graph_task_id: str, key: str) -> str:
    """The agent run's task id of an agent step: stable for the graph task and step."""
    digest = hashlib.sha256(f"{graph_task_id}\x00{key}".encode()).hexdigest()[:40]
    return f"graph-step:{digest}"


ChildDispatcher = Callable[[list[RunAgent], list[AgentMessage]], Awaitable[None]]
"""Publishes child tasks (and the request messages for them) over NATS."""


def child_tasks(run: GraphRun, children: list[dict[str, Any]]) -> list[RunAgent]:
    return [
        RunAgent(
            task_id=c["task_id"],
            agent=c["agent"],
            prompt=c["prompt"],
            session_id=c.get("session_id"),
            deadline=c.get("deadline"),
            metadata={
                CORRELATION_KEY: run.task_id,
                CAUSATION_KEY: caused_by(c),
                PARENT_KEY: run.task_id,
            },
        )
        for c in children
    ]


def request_messages(run: GraphRun, children: list[dict[str, Any]]) -> list[AgentMessage]:
    """The messages the children were dispatched for (a broadcast once)."""
    messages: dict[str, AgentMessage] = {}
    for c in children:
        messages.setdefault(caused_by(c), request_message(run.task_id, run.graph, c))
    return list(messages.values())


class GraphRunner:
    def __init__(
        self,
        *,
        store: AsyncEventStore,
        catalog: Catalog,
        agents: AgentRunner | None = None,
        dispatcher: ChildDispatcher | None = None,
    ) -> None:
        """`dispatcher` publishes the child tasks of `call_agents` (none: a step that
        dispatches fails, saying so)."""
        self._store = store
        self._catalog = catalog
        self._agents = agents
        self._dispatcher = dispatcher
        self._child_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per parent task id: the lock its children's outcomes are recorded under, and
        how many are waiting for it (the entry goes when none is)."""

    def entry(self, name: str) -> GraphEntry:
        try:
            return self._catalog.graphs[name]
        except KeyError:
            known = ", ".join(sorted(self._catalog.graphs)) or "none"
            raise GraphRejected(
                ErrorKind.UNKNOWN_GRAPH, f"unknown graph {name!r}; the catalog has: {known}"
            ) from None

    async def run(
        self, task: RunGraph, guard: Guard | None = None, reply_to: str | None = None
    ) -> GraphOutcome:
        """Start (or resume, or look up) the graph task's run; its outcome once recorded.

        Raises `GraphRejected` before anything is recorded for an unknown graph or inputs
        that do not validate as the graph's input type; store errors propagate
        (`StoreUnavailable`, `ConcurrencyConflict`: retry later). `guard` (a run lease's
        check) is called before each live step and agent model request; what it raises
        (`LeaseLost`) stops the drive with nothing more recorded. `reply_to` (the
        delivery's checked reply subject) is recorded if the run goes waiting, to be
        answered when it ends (`reply_subject`)."""
        entry = self.entry(task.graph)
        graph = entry.graph
        try:
            TypeAdapter(graph.input_type).validate_python(task.inputs)
        except ValidationError as e:
            raise GraphRejected(
                ErrorKind.INVALID_PAYLOAD,
                f"inputs do not fit graph {task.graph!r}: {first_problem(e, 'inputs')}",
            ) from None
        run, events = await self._load(task.task_id)
        if run is None:
            run = GraphRun(
                task_id=task.task_id,
                graph=task.graph,
                inputs=task.inputs,
                state=None,
                metadata=dict(task.metadata),
                max_steps=task.max_steps or entry.max_steps,
                deadline=None if task.deadline is None else task.deadline.isoformat(),
            )
            try:
                events = await self._save(run)
            except ConcurrencyConflict:  # another delivery created it first
                run, events = await self._load(task.task_id)
                assert run is not None
        if run.status == "waiting":
            # A redelivery of the task while it waits: the children's publish may have
            # been lost with a crashed worker (they are idempotent by task id).
            await self._dispatch(run, GraphHistory.fold(events), only_missing=True)
        if run.status != "running":
            return graph_outcome_of(run)
        return await self._drive(run, events, entry, guard, reply_to)

    async def record_child(
        self, done: ChildDone
    ) -> tuple[GraphRunStatus | None, AgentMessage | None]:
        """Record a child's outcome (once, and only for a child the run awaits): the
        run's status after (None: no such run) and the response message recorded (None:
        nothing was). Conflicting saves are retried: children of one run end together
        on several workers."""
        # Children of one run end together: record them one at a time in this process
        # (a save racing another for the same run only conflicts and loads again).
        lock, users = self._child_locks.get(done.task_id, (asyncio.Lock(), 0))
        self._child_locks[done.task_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._record_child(done)
        finally:
            lock, users = self._child_locks[done.task_id]
            if users == 1:
                del self._child_locks[done.task_id]
            else:
                self._child_locks[done.task_id] = (lock, users - 1)

    async def _record_child(
        self, done: ChildDone
    ) -> tuple[GraphRunStatus | None, AgentMessage | None]:
        for _ in range(20):
            run, events = await self._load(done.task_id)
            if run is None:
                return None, None
            outcome = done.outcome.model_dump(mode="json")
            key = run.children.get(done.child_task_id, "")
            others = run.waiting_on.get(key, set()) - {done.child_task_id}
            if not run.finish_child(done.child_task_id, outcome):
                return run.status, None
            try:
                await self._store.save(run)
            except ConcurrencyConflict:
                continue
            log.info(
                "child task ended",
                task_id=run.task_id,
                child_task_id=done.child_task_id,
                status=done.outcome.status,
                waiting_for=sum(len(v) for v in run.waiting_on.values()),
            )
            history = GraphHistory.fold(events)
            dispatched = history.dispatched.get(key, [])
            child = next(c for c in dispatched if c["task_id"] == done.child_task_id)
            if others and key not in run.waiting_on:  # fail-fast: the rest are not awaited
                abandoned = [c for c in dispatched if c["task_id"] in others]
                await self.cancel_children(
                    run, abandoned, f"fail-fast: child {done.child_task_id} did not complete"
                )
            return run.status, response_message(run.task_id, run.graph, child, outcome)
        raise ConcurrencyConflict(f"graph run of task {done.task_id!r} kept changing")

    async def go_on(
        self, task_id: str, guard: Guard | None = None
    ) -> tuple[GraphOutcome, str | None]:
        """Drive a run whose children have all ended (what `record_child` made ready);
        its outcome, and the reply subject recorded when it first went waiting (None:
        none), where the outcome is owed too."""
        run, events = await self._existing(task_id, "go on with")
        if run.status != "running":
            return graph_outcome_of(run), run.reply_to
        return await self._drive(run, events, self.entry(run.graph), guard), run.reply_to

    async def _dispatch(
        self, run: GraphRun, history: GraphHistory, only_missing: bool = False
    ) -> None:
        children = [
            c
            for key in run.waiting_on
            for c in history.dispatched.get(key, [])
            if not only_missing or c["task_id"] in run.waiting_on[key]
        ]
        if not children:
            return
        if self._dispatcher is None:
            raise RuntimeError("this graph runner cannot dispatch child tasks (no NATS)")
        await self._dispatcher(child_tasks(run, children), request_messages(run, children))

    async def resume(
        self, resume: ResumeGraph, guard: Guard | None = None, reply_to: str | None = None
    ) -> GraphOutcome:
        """Record the input of a paused run (once per `resume_id`) and drive it on."""
        run, events = await self._existing(resume.task_id, "resume")
        if resume.resume_id in run.resume_ids:  # applied before (a redelivery)
            if run.status != "running":
                return graph_outcome_of(run)
            return await self._drive(run, events, self.entry(run.graph), guard, reply_to)
        if run.status != "paused":
            raise GraphRejected(
                ErrorKind.RUN_FINISHED,
                f"graph run of task {resume.task_id!r} is {run.status}, not paused",
            )
        run.resume(to_jsonable_python(resume.input), resume.resume_id)
        events += await self._save(run)
        return await self._drive(run, events, self.entry(run.graph), guard, reply_to)

    async def cancel(self, cancel: CancelGraph) -> GraphOutcome:
        """End a running, paused or waiting run as failed (`cancelled`, with the reason).
        A worker driving it stops at its next save, which conflicts. The children it
        still waits for are cancelled too (`cancel_children`)."""
        for _ in range(5):
            run, events = await self._existing(cancel.task_id, "cancel")
            if run.status == "failed" and run.error_kind == str(ErrorKind.CANCELLED):
                # Cancelled before: its children may not all have been (a store error
                # between the two; this is the redelivery). Cancelling is idempotent.
                history = GraphHistory.fold(events)
                unfinished = [
                    c
                    for children in history.dispatched.values()
                    for c in children
                    if c["task_id"] not in history.child_outcomes
                ]
                await self.cancel_children(run, unfinished, run.error_message or cancel.reason)
            if run.status in ("completed", "failed"):
                raise GraphRejected(
                    ErrorKind.RUN_FINISHED,
                    f"graph run of task {cancel.task_id!r} is already {run.status}",
                )
            history = GraphHistory.fold(events)
            outstanding = [
                c
                for key, ids in run.waiting_on.items()
                for c in history.dispatched.get(key, [])
                if c["task_id"] in ids
            ]
            run.fail(str(ErrorKind.CANCELLED), cancel.reason, _elapsed_ms(run))
            try:
                await self._store.save(run)
            except ConcurrencyConflict:
                continue  # a step was recorded meanwhile: load again and retry
            await self.cancel_children(run, outstanding, cancel.reason)
            return graph_outcome_of(run)
        raise ConcurrencyConflict(f"graph run of task {cancel.task_id!r} kept changing")

    async def cancel_children(
        self, run: GraphRun, children: list[dict[str, Any]], reason: str
    ) -> None:
        """Cancel each child's agent run (`AgentRunner.cancel`): one not started yet is
        recorded as cancelled, so the worker that takes its task runs nothing; one being
        driven stops at its next save. Their outcomes still reach the run (ignored: it
        has ended). Store errors propagate (the cancel is retried; cancelling is
        idempotent)."""
        if not children or self._agents is None:
            return
        why = f"workflow {run.task_id} cancelled: {reason}"
        for task in child_tasks(run, children):
            await self._agents.cancel(task, why)
        log.info("child tasks cancelled", task_id=run.task_id, children=len(children))

    async def reply_subject(self, task_id: str) -> str | None:
        """The reply subject the run recorded when it first went waiting (None: none)."""
        run, _ = await self._load(task_id)
        return None if run is None else run.reply_to

    async def _load(self, task_id: str) -> tuple[GraphRun | None, list[Any]]:
        """The task's run and its events, from one read: the executor folds the same
        events into its history."""
        events = await self._store.events(graph_run_id_for(task_id))
        return graph_run_of(events), events

    async def _save(self, run: GraphRun) -> list[Any]:
        """Save the run's new events; returns them."""
        pending = list(run.pending_events)
        await self._store.save(run)
        return pending

    async def _existing(self, task_id: str, what: str) -> tuple[GraphRun, list[Any]]:
        run, events = await self._load(task_id)
        if run is None:
            raise GraphRejected(
                ErrorKind.UNKNOWN_RUN, f"cannot {what}: no graph run for task {task_id!r}"
            )
        return run, events

    async def _drive(
        self,
        run: GraphRun,
        events: list[Any],
        entry: GraphEntry,
        guard: Guard | None = None,
        reply_to: str | None = None,
    ) -> GraphOutcome:
        history = GraphHistory.fold(events)
        assert history.started is not None
        bound = log.bind(task_id=run.task_id, graph=run.graph, run_id=str(run.id))
        executor = GraphExecutor(
            entry.graph,
            run,
            history,
            save=lambda: self._store.save(run),
            agent_runner=lambda agent, prompt, graph_task_id, key: self._agent_step(
                agent, prompt, graph_task_id, key, guard
            ),
            deadline=None if run.deadline is None else datetime.fromisoformat(run.deadline),
            guard=guard,
        )
        inputs = TypeAdapter(entry.graph.input_type).validate_python(history.started.inputs)
        try:
            output = await executor.execute(inputs)
        except GraphWaitingForChildren as waiting:
            if self._dispatcher is None:
                return await self._fail(
                    run, ErrorKind.STEP_ERROR, "call_agents needs a worker that can dispatch"
                )
            if waiting.new:
                run.dispatch_children(waiting.key, waiting.node_id, waiting.children, reply_to)
                await self._store.save(run)
                history.dispatched[waiting.key] = waiting.children
                await self._dispatch(run, history)
                bound.info("graph run waits for child tasks", children=len(waiting.children))
            return graph_outcome_of(run)
        except GraphPausedForInput as paused:
            run.pause(paused.key, paused.node_id, to_jsonable_python(paused.prompt))
            await self._store.save(run)
            bound.info("graph run paused", node=paused.node_id)
            return graph_outcome_of(run)
        except (StoreUnavailable, ConcurrencyConflict, RunSuperseded):
            raise
        except StepLimitExceeded as e:
            return await self._fail(run, ErrorKind.STEP_LIMIT_EXCEEDED, str(e))
        except GraphDiverged as e:
            return await self._fail(run, ErrorKind.GRAPH_DIVERGED, str(e))
        except TimeoutError as e:
            return await self._fail(run, ErrorKind.DEADLINE_EXCEEDED, str(e))
        except Exception as e:
            return await self._fail(run, ErrorKind.STEP_ERROR, f"{type(e).__name__}: {e}")
        run.complete(executor.dump_output(output), _elapsed_ms(run))
        await self._store.save(run)
        bound.info("graph run completed", live_steps=len(executor.live))
        return graph_outcome_of(run)

    async def _fail(self, run: GraphRun, kind: ErrorKind, message: str) -> GraphOutcome:
        run.fail(str(kind), message, _elapsed_ms(run))
        await self._store.save(run)
        log.info("graph run failed", task_id=run.task_id, error_kind=str(kind), error=message)
        return graph_outcome_of(run)

    async def _agent_step(
        self, agent: str, prompt: str, graph_task_id: str, key: str, guard: Guard | None = None
    ) -> Any:
        if self._agents is None:
            raise RuntimeError("agent steps need an agent runner")
        task = RunAgent(
            task_id=agent_step_task_id(graph_task_id, key),
            agent=agent,
            prompt=prompt,
            metadata={"graph_task_id": graph_task_id, "graph_step": key[:4096]},
        )
        outcome = await self._agents.run(task, guard=guard)
        if outcome.status != "completed":
            error = outcome.error
            raise AgentStepFailed(
                f"agent {agent!r} failed: {error.kind}: {error.message}"
                if error
                else f"agent {agent!r} failed"
            )
        return outcome.output


def _elapsed_ms(run: GraphRun) -> float:
    return (datetime.now(UTC) - run.created_on).total_seconds() * 1000
