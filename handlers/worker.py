"""The task worker: runs the tasks of a durable JetStream pull consumer
(`handlers/task_consumer.py` fetches them, at most one per free slot).

Acknowledgement is manual and follows one rule: ack only after the run's final events
are committed and its outcome published. Transient failures nak with backoff (the run
resumes on redelivery); poison input is recorded as a rejection and terminated. A
SIGTERM drains: no new runs start, in-flight runs get `shutdown_grace_s` to finish,
and whatever is still running is released (nak) for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from opentelemetry import trace

from agentledger.domain.errors import ErrorKind
from agentledger.domain.ids import run_id_for
from agentledger.domain.subjects import (
    task_subject,
    workers_consumer,
)
from agentledger.domain.tasks import OutcomeStatus, RunAgent, RunError, RunOutcome
from agentledger.handlers.answers import TaskAnswers, checked_reply_subject
from agentledger.handlers.catalog import Catalog, UnknownAgent
from agentledger.handlers.dead_letters import dead_letter
from agentledger.handlers.intake import RawTask, Rejection, parse_task
from agentledger.handlers.operations.metrics import WorkerMetrics
from agentledger.handlers.runner import AgentRunner, RunSuperseded, TransientRunError
from agentledger.handlers.task_consumer import (
    Delivery,
    TaskConsumer,
    release_in_flight,
    worker_consumer,
)
from agentledger.infra.event_store import (
    AsyncEventStore,
    BrokenStream,
    StoreUnavailable,
)
from agentledger.infra.leases import Held, Lease
from agentledger.infra.settings import Settings

__all__ = [
    "REPLY_HEADER",
    "TRANSIENT_ERRORS",
    "TaskWorker",
    "backoff_s",
    "nak_or_give_up",
    "take_lease",
]

log = structlog.get_logger("agentledger.worker")

REPLY_HEADER = "Agentledger-Reply-To"
"""Header naming a subject that also receives the outcome (JetStream answers a plain
request with its publish ack, so the reply subject travels in a header)."""


DRAIN_REDELIVERY_DELAY_S = 1.0


def backoff_s(delivered: int) -> float:
    """Redelivery delay after a transient failure: 0.5 s doubling, at most 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, delivered - 1)))


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    TransientRunError,
    StoreUnavailable,
    RunSuperseded,
    NatsError,
)
"""Failures that heal by waiting. A NATS error (an outcome publish timing out while the
server restarts) is one too: the outcome is published again on redelivery."""


async def nak_or_give_up(
    msg: Delivery,
    error: Exception,
    delivered: int,
    final: bool,
    bound: Any,
    transient_errors: tuple[type[Exception], ...] = TRANSIENT_ERRORS,
) -> tuple[ErrorKind, str] | None:
    """The delivery rule after a failure, for every kind of task: before the last
    delivery, nak with backoff (None); on the last, the (kind, reason) to give up with."""
    transient = isinstance(error, transient_errors)
    if not final:
        delay = backoff_s(delivered)
        if transient:
            bound.warning("transient failure; will redeliver", error=str(error), delay_s=delay)
        else:
            bound.exception("unexpected error; will redeliver", delay_s=delay)
        await msg.nack(delay=delay)
        return None
    kind = ErrorKind.TRANSIENT_EXHAUSTED if transient else ErrorKind.INTERNAL_ERROR
    reason = f"gave up after {delivered} deliveries: {type(error).__name__}: {error}"
    bound.error("last delivery failed; giving up", error=reason)
    return kind, reason


async def take_lease(
    msg: Delivery, run_id: str, final: bool, bound: Any
) -> tuple[bool, Lease | None]:
    """Whether to drive the run, with its lease for this delivery (None: leases are
    off). While another worker holds it, the task is handed back with a delay (False),
    or, on the last delivery, waited for: a task is never given up while its run is
    being driven."""
    waited = False
    while True:
        got = await msg.acquire_lease(run_id)
        if not isinstance(got, Held):
            if waited:
                bound.info("run lease free; taking the run over")
            return True, got
        if not final:
            delay = min(30.0, got.remaining_s + 0.5)
            bound.info(
                "run is being driven by another worker; handing the task back",
                holder=got.holder,
                delay_s=delay,
            )
            await msg.nack(delay=delay)
            return False, None
        if not waited:
            bound.info("last delivery: waiting for the other driver's lease", holder=got.holder)
            waited = True
        await asyncio.sleep(min(1.0, max(0.1, got.remaining_s)))


def _trace_task(task: RunAgent, delivered: int) -> None:
    """Name the task on the delivery's span (FastStream's `<subject> process` span when
    tracing is on; a no-op otherwise)."""
    span = trace.get_current_span()
    span.set_attributes(
        {
            "agentledger.task_id": task.task_id,
            "agentledger.run_id": str(run_id_for(task.task_id)),
            "agentledger.agent": task.agent,
            "agentledger.delivery": delivered,
        }
    )
    if task.session_id is not None:
        span.set_attribute("agentledger.session_id", task.session_id)


def _as_task(body: bytes) -> RunAgent | None:
    """A rejected message as a `RunAgent` if it is a well-formed one (its agent unknown,
    say), else None: only to tell a graph run that its child was rejected."""
    try:
        return RunAgent.model_validate_json(body)
    except Exception:
        return None


def _subject_agent(subject: str) -> str:
    """The agent a task subject names (untrusted: only a metric label once checked)."""
    return subject.rsplit(".", 1)[-1]


class TaskWorker:
    """Consumes `<prefix>.tasks.run.*`, runs tasks, publishes outcomes."""

    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        store: AsyncEventStore,
        catalog: Catalog,
        runner: AgentRunner,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        """`metrics`: where the worker counts tasks (default: a private registry)."""
        self.settings = settings
        self.broker = broker
        self.store = store
        self.catalog = catalog
        self.runner = runner
        self.metrics = WorkerMetrics(catalog.names()) if metrics is None else metrics
        self.in_flight: dict[asyncio.Task[Any], Delivery] = {}
        self.draining = False
        prefix = settings.subject_prefix
        self.durable = workers_consumer(prefix)
        """The durable consumer all workers of this prefix share."""
        self.consumer: TaskConsumer | None = None
        self.answers = TaskAnswers(broker=broker, store=store, prefix=prefix)

    async def start(self, tracer_provider: Any = None) -> None:
        """Start pulling tasks on the feed thread (the broker is connected)."""
        settings = self.settings
        tracer = tracer_provider.get_tracer("agentledger.worker") if tracer_provider else None
        self.consumer = worker_consumer(
            settings,
            name="agentledger-worker",
            subject=task_subject(settings.subject_prefix, "*"),
            durable=self.durable,
            handle=self.handle,
            tracer=tracer,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        """Stop pulling and drop the subscription (call after `drain`)."""
        if self.consumer is not None:
            await self.consumer.close()

    async def handle(self, body: bytes, msg: Delivery) -> None:
        if self.draining:
            # Shutting down: hand the task back; another worker (or this one's
            # successor) takes it after the delay.
            await msg.nack(delay=DRAIN_REDELIVERY_DELAY_S)
            return
        current = asyncio.current_task()
        assert current is not None
        self.in_flight[current] = msg
        self.metrics.in_flight.inc()
        # Its heartbeats come from the consumer's feed thread (from the moment the fetch
        # returned), not from this event loop.
        try:
            await self._process(body, msg)
        finally:
            self.in_flight.pop(current, None)
            self.metrics.in_flight.dec()

    async def _process(self, body: bytes, msg: Delivery) -> None:
        raw = msg.raw_message
        metadata = raw.metadata
        delivered = metadata.num_delivered or 1
        headers = raw.headers or {}
        task_raw = RawTask(
            body=body,
            subject=raw.subject,
            msg_id=headers.get("Nats-Msg-Id"),
            fallback_key=f"{metadata.stream}:{metadata.sequence.stream}",
            delivered=delivered,
        )
        bound = log.bind(subject=raw.subject, delivered=delivered)
        reply_to = self._reply_subject(headers.get(REPLY_HEADER), bound)
        self.metrics.task_received(_subject_agent(raw.subject), delivered=delivered)
        task: RunAgent | None = None
        final = delivered >= self.settings.max_deliveries
        try:
            task = parse_task(
                task_raw, catalog=self.catalog, max_prompt_chars=self.settings.max_prompt_chars
            )
            bound = bound.bind(task_id=task.task_id, agent=task.agent)
            _trace_task(task, delivered)
            proceed, lease = await take_lease(msg, str(run_id_for(task.task_id)), final, bound)
            if not proceed:
                return  # handed back: another worker drives the run
            started = time.perf_counter()
            try:
                outcome = await self.runner.run(
                    task,
                    final_attempt=final,
                    first_delivery=delivered == 1,
                    guard=None if lease is None else lease.check,
                )
            except UnknownAgent as e:
                raise Rejection(
                    ErrorKind.UNKNOWN_AGENT, str(e), key=task.task_id, task_id=task.task_id
                ) from None
            seconds = time.perf_counter() - started
            trace.get_current_span().set_attribute("agentledger.status", outcome.status)
            await self.answers.publish(outcome, reply_to, task=task)
            await msg.ack()
            self.metrics.run_finished(task.agent, outcome.status, seconds)
        except Rejection as rejection:
            await self._reject(msg, rejection, task_raw, reply_to, delivered, bound, task)
        except BrokenStream as e:
            # Never heals by waiting: give up now rather than after every redelivery.
            bound.error("run cannot be loaded; giving up", error=str(e))
            await self._give_up(msg, task_raw, task, ErrorKind.INTERNAL_ERROR, str(e), reply_to)
        except Exception as e:
            give_up = await nak_or_give_up(msg, e, delivered, final, bound)
            if give_up is not None:
                await self._give_up(msg, task_raw, task, *give_up, reply_to)

    def _reply_subject(self, requested: str | None, bound: Any) -> str | None:
        return checked_reply_subject(self.settings.subject_prefix, requested, bound)

    async def _give_up(
        self,
        msg: Delivery,
        raw: RawTask,
        task: RunAgent | None,
        kind: ErrorKind,
        reason: str,
        reply_to: str | None,
    ) -> None:
        """The one place where the worker gives up on a message: it is never just dropped.

        A parsed task ends as a `failed` run with `kind` (the run is created if it never
        was). What cannot be recorded (the store is down) goes to the dead-letter stream
        with the reason, and the task, when its id is known, is answered with a `failed`
        outcome of kind `dead_lettered`. Either way the message is terminated.
        """
        if task is not None:
            try:
                outcome = await self.runner.give_up(task, kind, reason)
            except Exception as e:
                log.warning("cannot record the failure; dead-lettering", error=str(e))
            else:
                await self.answers.publish(outcome, reply_to, task=task)
                await msg.reject()
                self.metrics.run_finished(task.agent, outcome.status, None)
                return
        await self._dead_letter(msg, raw, task, str(kind), reason, reply_to)

    async def _dead_letter(
        self,
        msg: Delivery,
        raw: RawTask,
        task: RunAgent | None,
        kind: str,
        reason: str,
        reply_to: str | None,
        status: OutcomeStatus = "failed",
    ) -> None:
        metadata = msg.raw_message.metadata
        try:
            sequence = await dead_letter(
                self.broker.connection.jetstream(),
                self.settings.subject_prefix,
                subject=raw.subject,
                body=raw.body,
                headers=dict(msg.raw_message.headers or {}),
                task_id=task.task_id if task else None,
                kind=kind,
                reason=reason,
                delivered=metadata.num_delivered or 1,
                tasks_sequence=metadata.sequence.stream,
            )
        except Exception as e:
            # Nothing can hold it: leave it to JetStream (the message stays in the tasks
            # stream; its max-deliveries advisory names it).
            log.error("cannot dead-letter the message", error=str(e), reason=reason)
            await msg.nack(delay=backoff_s(metadata.num_delivered or 1))
            return
        log.error("task dead-lettered", dead_letter=sequence, kind=kind, reason=reason)
        self.metrics.dead_lettered(kind)
        if task is not None:
            outcome = RunOutcome(
                task_id=task.task_id,
                run_id=str(run_id_for(task.task_id)),
                agent=task.agent,
                session_id=task.session_id,
                status=status,
                error=RunError(
                    kind=str(ErrorKind.DEAD_LETTERED) if status == "failed" else kind,
                    message=f"{reason} (dead letter {sequence}:"
                    f" `agentledger dead retry {sequence}` requeues it)",
                    retryable=status == "failed",
                ),
            )
            with contextlib.suppress(Exception):  # a dead-lettered child fails its step too
                await self.answers.publish(outcome, reply_to, task=task)
        await msg.reject()

    async def _reject(
        self,
        msg: Delivery,
        rejection: Rejection,
        raw: RawTask,
        reply_to: str | None,
        delivered: int,
        bound: Any,
        task: RunAgent | None = None,
    ) -> None:
        """Record the rejection, answer it, terminate the message (or retry the whole
        thing later if the store is down: a rejection is never dropped unrecorded). A
        rejected child of a graph run (e.g. for an agent not in the catalog, refused
        before `task` is parsed) is reported to that run."""
        try:
            outcome = await self.answers.record_rejection(rejection, raw)
        except StoreUnavailable as e:
            if delivered < self.settings.max_deliveries:
                bound.warning("cannot record rejection yet; will retry", error=str(e))
                await msg.nack(delay=backoff_s(delivered))
                return
            # The last delivery: keep the message as a dead letter instead.
            await self._dead_letter(
                msg,
                raw,
                None,
                str(rejection.kind),
                f"rejected ({rejection.reason}), but the rejection could not be recorded: {e}",
                reply_to,
            )
            return
        await self.answers.publish(
            outcome,
            reply_to,
            store=await self.answers.speaks_for(rejection, raw),
            task=task or _as_task(raw.body),
        )
        await msg.reject()
        # Terminated: JetStream will not deliver it again.
        self.metrics.task_rejected(
            rejection.agent or _subject_agent(raw.subject), str(rejection.kind)
        )

    async def drain(self, grace_s: float) -> None:
        """Stop taking runs; wait up to `grace_s` for in-flight ones; release the rest
        (`release_in_flight`)."""
        self.draining = True
        if self.consumer is not None:
            await self.consumer.stop_fetching()
        await release_in_flight(self.in_flight, grace_s)
