"""The graph worker: takes `<prefix>.tasks.graph.*` messages from its own durable consumer
(`<prefix>-graph-workers`, fetched by a `TaskConsumer` feed thread like agent tasks) and
hands them to `GraphRunner`.

The rules are the agent worker's:
- ack only after the outcome is recorded and published on `<prefix>.results.<task_id>`
  (a paused run's outcome has status `paused`);
- poison input is recorded as a rejection (`TaskRejected`) and terminated;
- store and NATS errors nak with backoff;
- on the last delivery, a graph run that cannot finish ends as `failed`
  (`transient_exhausted` / `internal_error`), and what cannot be recorded at all goes to
  the dead-letter stream.

A rejected *resume* or *cancel* is answered on its reply subject only, never on the
results subject of the task it names: that subject holds the run's own outcome.
"""

from __future__ import annotations

import contextlib

import structlog
from faststream.nats import NatsBroker

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.graphs.tasks import (
    ChildDone,
    GraphOutcome,
    ResumeGraph,
    RunGraph,
)
from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.orchestration.messages import AgentMessage, message_subject
from agentledger.domain.subjects import graph_workers_consumer, workflow_cancel_subject
from agentledger.domain.tasks import RunError
from agentledger.handlers.graphs.intake import GraphMessage, parse_graph_message
from agentledger.handlers.graphs.runner import GraphRejected, GraphRunner, graph_outcome_of
from agentledger.handlers.intake import RawTask, Rejection
from agentledger.handlers.kind_worker import KindWorker, Received
from agentledger.handlers.task_consumer import Delivery
from agentledger.handlers.worker import TRANSIENT_ERRORS, nak_or_give_up, take_lease
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict
from agentledger.infra.settings import Settings

__all__ = ["GraphWorker"]

log = structlog.get_logger("agentledger.graphs")


_TRANSIENT = (*TRANSIENT_ERRORS, ConcurrencyConflict)
"""A graph run's save can conflict with a cancel or another driver: load again later."""


class GraphWorker(KindWorker):
    name = "agentledger-graph-worker"
    what = "graph tasks"

    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        store: AsyncEventStore,
        runner: GraphRunner,
    ) -> None:
        prefix = settings.subject_prefix
        super().__init__(
            settings=settings,
            broker=broker,
            store=store,
            subject=f"{prefix}.tasks.graph.*",
            durable=graph_workers_consumer(prefix),
            logger=log,
            extra_subjects=(workflow_cancel_subject(prefix),),
        )
        self.runner = runner

    async def process(self, received: Received, msg: Delivery) -> None:
        raw, reply_to, delivered, bound = (
            received.raw,
            received.reply_to,
            received.delivered,
            received.bound,
        )
        message: GraphMessage | None = None
        try:
            message = parse_graph_message(raw)
            if isinstance(message, ChildDone):
                await self._child_done(message, msg, received)
                return
            guard = None  # a cancel takes no lease: it must work while a run is driven
            if isinstance(message, RunGraph | ResumeGraph):
                run_id = str(graph_run_id_for(message.task_id))
                proceed, lease = await take_lease(msg, run_id, received.final, bound)
                if not proceed:
                    return  # handed back: another worker drives the run
                guard = None if lease is None else lease.check
            if isinstance(message, RunGraph):
                outcome = await self.runner.run(message, guard, reply_to)
            elif isinstance(message, ResumeGraph):
                outcome = await self.runner.resume(message, guard, reply_to)
            else:
                outcome = await self.runner.cancel(message)
                # A workflow cancelled while it waited owes its start an answer too.
                started = await self.runner.reply_subject(message.task_id)
                if started is not None and started != reply_to:
                    await self.answers.publish(outcome, started, store=False)
            if outcome.status != "waiting":  # the answer comes when the children end
                await self.answers.publish(outcome, reply_to)
            await msg.ack()
        except Rejection as rejection:
            await self._reject(msg, rejection, received, message)
        except GraphRejected as e:
            assert message is not None
            refused = Rejection(
                e.kind, str(e), key=raw.msg_id or message.task_id, task_id=message.task_id
            )
            await self._reject(msg, refused, received, message)
        except Exception as e:
            give_up = await nak_or_give_up(msg, e, delivered, received.final, bound, _TRANSIENT)
            if give_up is not None:
                await self._give_up(msg, raw, message, *give_up, reply_to)

    async def _child_done(self, done: ChildDone, msg: Delivery, received: Received) -> None:
        """Record a child's outcome; when it was the last one awaited, drive the run on
        (under its lease) and answer its task if it ended or paused."""
        status, response = await self.runner.record_child(done)
        if response is not None:
            await self.publish_message(response)
        if status == "running":
            run_id = str(graph_run_id_for(done.task_id))
            proceed, lease = await take_lease(msg, run_id, received.final, received.bound)
            if not proceed:
                return
            outcome, reply_to = await self.runner.go_on(
                done.task_id, None if lease is None else lease.check
            )
            if outcome.status != "waiting":  # answered where the start asked, too
                await self.answers.publish(outcome, reply_to)
        elif status is None:
            received.bound.warning("child outcome for an unknown graph run", task_id=done.task_id)
        await msg.ack()

    async def publish_message(self, message: AgentMessage) -> None:
        """Publish a recorded workflow message on `<prefix>.messages.<workflow>.<receiver>`
        (core NATS, for whoever follows the workflow; the record is the event)."""
        try:
            await self.broker.connection.publish(
                message_subject(self.prefix, message), message.model_dump_json().encode()
            )
        except Exception as e:  # recorded already; the feed is best effort
            log.warning("could not publish a workflow message", error=str(e))

    async def _reject(
        self,
        msg: Delivery,
        rejection: Rejection,
        received: Received,
        message: GraphMessage | None,
    ) -> None:
        """Record the rejection and answer it; on the results subject only when it is
        the outcome of a new graph task (never over a run's own outcome)."""
        recorded = await self.record_rejection(msg, rejection, received)
        if recorded is None:
            return
        outcome = GraphOutcome(
            task_id=rejection.task_id,
            run_id=recorded.run_id,
            graph=message.graph if isinstance(message, RunGraph) else None,
            status="rejected",
            error=recorded.error,
        )
        store = await self._speaks_for(rejection, received.raw, message)
        await self.answers.publish(outcome, received.reply_to, store=store)
        await msg.reject()

    async def _speaks_for(
        self,
        rejection: Rejection,
        raw: RawTask,
        message: GraphMessage | None,
    ) -> bool:
        """A resume or cancel never speaks for the task it names; a start does when no
        run (agent or graph) has that task id."""
        if raw.subject.rsplit(".", 1)[-1] in ("resume", "cancel", "child"):
            return False
        return await self.answers.speaks_for(rejection, raw)

    async def _give_up(
        self,
        msg: Delivery,
        raw: RawTask,
        message: GraphMessage | None,
        kind: ErrorKind,
        reason: str,
        reply_to: str | None,
    ) -> None:
        """A graph run that exists ends as failed; otherwise the message is dead-lettered."""
        task_id = message.task_id if message is not None else None
        if task_id is not None:
            try:
                run = await self.store.get(graph_run_id_for(task_id), GraphRun)
                if run is not None and run.status in ("running", "paused", "waiting"):
                    run.fail(str(kind), reason, 0.0)
                    await self.store.save(run)
                if run is not None:
                    await self.answers.publish(graph_outcome_of(run), reply_to)
                    await msg.reject()
                    return
            except Exception as e:
                log.warning("cannot record the failure; dead-lettering", error=str(e))
        await self._dead_letter(msg, raw, message, str(kind), reason, reply_to)

    async def _dead_letter(
        self,
        msg: Delivery,
        raw: RawTask,
        message: GraphMessage | None,
        kind: str,
        reason: str,
        reply_to: str | None,
    ) -> None:
        task_id = message.task_id if message is not None else None
        sequence = await self.keep_dead(msg, raw, task_id, kind, reason)
        if sequence is None:
            return
        if isinstance(message, RunGraph):
            outcome = GraphOutcome(
                task_id=message.task_id,
                run_id=str(graph_run_id_for(message.task_id)),
                graph=message.graph,
                status="failed",
                error=RunError(
                    kind=str(ErrorKind.DEAD_LETTERED),
                    message=f"{reason} (dead letter {sequence}:"
                    f" `agentledger dead retry {sequence}` requeues it)",
                    retryable=True,
                ),
            )
            with contextlib.suppress(Exception):
                await self.answers.publish(outcome, reply_to)
        await msg.reject()
