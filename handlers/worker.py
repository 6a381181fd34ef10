"""The task worker: a FastStream subscriber on a durable JetStream pull consumer.

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
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import ConsumerConfig, DeliverPolicy
from opentelemetry import trace

from agentledger.domain.errors import ErrorKind
from agentledger.domain.ids import run_id_for
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.subjects import results_subject, workers_consumer
from agentledger.domain.tasks import RunAgent, RunError, RunOutcome
from agentledger.handlers.catalog import Catalog, UnknownAgent
from agentledger.handlers.intake import RawTask, Rejection, parse_task
from agentledger.handlers.operations.metrics import WorkerMetrics
from agentledger.handlers.runner import AgentRunner, RunSuperseded, TransientRunError
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict, StoreUnavailable
from agentledger.infra.settings import Settings

__all__ = ["REPLY_HEADER", "TaskWorker", "backoff_s"]

log = structlog.get_logger("agentledger.worker")

REPLY_HEADER = "Agentledger-Reply-To"
"""Header naming a subject that also receives the outcome (JetStream answers a plain
request with its publish ack, so the reply subject travels in a header)."""


DRAIN_REDELIVERY_DELAY_S = 1.0
RELEASE_DELAY_S = 3.0


def backoff_s(delivered: int) -> float:
    """Redelivery delay after a transient failure: 0.5 s doubling, at most 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, delivered - 1)))


async def _raw_body(msg: NatsMessage) -> bytes:
    return msg.body


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
        self.in_flight: dict[asyncio.Task[Any], NatsMessage] = {}
        self.draining = False
        prefix = settings.subject_prefix
        self.durable = workers_consumer(prefix)
        """The durable consumer all workers of this prefix share."""
        self.broker.subscriber(
            f"{prefix}.tasks.run.*",
            stream=JStream(settings.tasks_stream, declare=False),
            durable=self.durable,
            pull_sub=PullSub(batch_size=min(64, settings.worker_concurrency), timeout=1.0),
            max_workers=settings.worker_concurrency,
            ack_policy=AckPolicy.MANUAL,
            # The payload is parsed by intake, which turns any malformation into a
            # recorded rejection; FastStream must not decode (or reject) it first.
            decoder=_raw_body,
            config=ConsumerConfig(
                ack_wait=settings.ack_wait_s,
                max_deliver=settings.max_deliveries,
                max_ack_pending=max(1000, settings.worker_concurrency * 4),
                deliver_policy=DeliverPolicy.ALL,
            ),
        )(self.handle)

    async def handle(self, body: bytes, msg: NatsMessage) -> None:
        if self.draining:
            # Shutting down: hand the task back; another worker (or this one's
            # successor) takes it after the delay.
            await msg.nack(delay=DRAIN_REDELIVERY_DELAY_S)
            return
        current = asyncio.current_task()
        assert current is not None
        self.in_flight[current] = msg
        self.metrics.in_flight.inc()
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        try:
            await self._process(body, msg)
        finally:
            heartbeat.cancel()
            self.in_flight.pop(current, None)
            self.metrics.in_flight.dec()

    async def _heartbeat(self, msg: NatsMessage) -> None:
        interval = max(0.5, self.settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, body: bytes, msg: NatsMessage) -> None:
        raw = msg.raw_message
        metadata = raw.metadata
        delivered = metadata.num_delivered or 1
        headers = raw.headers or {}
        reply_to = headers.get(REPLY_HEADER)
        task_raw = RawTask(
            body=body,
            subject=raw.subject,
            msg_id=headers.get("Nats-Msg-Id"),
            fallback_key=f"{metadata.stream}:{metadata.sequence.stream}",
        )
        bound = log.bind(subject=raw.subject, delivered=delivered)
        self.metrics.task_received(_subject_agent(raw.subject), delivered=delivered)
        task_id: str | None = None
        try:
            task = parse_task(
                task_raw, catalog=self.catalog, max_prompt_chars=self.settings.max_prompt_chars
            )
            task_id = task.task_id
            bound = bound.bind(task_id=task.task_id, agent=task.agent)
            _trace_task(task, delivered)
            final = delivered >= self.settings.max_deliveries
            started = time.perf_counter()
            try:
                outcome = await self.runner.run(
                    task, final_attempt=final, first_delivery=delivered == 1
                )
            except UnknownAgent as e:
                raise Rejection(
                    ErrorKind.UNKNOWN_AGENT, str(e), key=task.task_id, task_id=task.task_id
                ) from None
            seconds = time.perf_counter() - started
            trace.get_current_span().set_attribute("agentledger.status", outcome.status)
            await self.publish_outcome(outcome, reply_to)
            await msg.ack()
            self.metrics.run_finished(task.agent, outcome.status, seconds)
        except Rejection as rejection:
            await self._reject(msg, rejection, task_raw, reply_to, delivered, bound)
        except (TransientRunError, StoreUnavailable, RunSuperseded) as e:
            delay = backoff_s(delivered)
            bound.warning("transient failure; will redeliver", error=str(e), delay_s=delay)
            await msg.nack(delay=delay)
        except Exception as e:
            if delivered < self.settings.max_deliveries:
                delay = backoff_s(delivered)
                bound.exception("unexpected error; will redeliver", delay_s=delay)
                await msg.nack(delay=delay)
                return
            # JetStream will not deliver it again: record why, answer, and terminate,
            # rather than leave an accepted task without an outcome.
            bound.exception("unexpected error on the last delivery; recording it")
            failure = Rejection(
                ErrorKind.INTERNAL_ERROR,
                f"gave up after {delivered} deliveries: {type(e).__name__}: {e}",
                key=task_id or task_raw.msg_id or task_raw.fallback_key,
                task_id=task_id,
            )
            await self._reject(msg, failure, task_raw, reply_to, delivered, bound)

    async def _reject(
        self,
        msg: NatsMessage,
        rejection: Rejection,
        raw: RawTask,
        reply_to: str | None,
        delivered: int,
        bound: Any,
    ) -> None:
        """Record the rejection, answer it, terminate the message (or retry the whole
        thing later if the store is down: a rejection is never dropped unrecorded)."""
        try:
            outcome = await self._record_rejection(rejection, raw)
        except StoreUnavailable as e:
            bound.warning("cannot record rejection yet; will retry", error=str(e))
            await msg.nack(delay=backoff_s(delivered))
            return
        await self.publish_outcome(outcome, reply_to)
        await msg.reject()
        # Terminated: JetStream will not deliver it again (the dead-letter point).
        self.metrics.task_rejected(
            rejection.agent or _subject_agent(raw.subject), str(rejection.kind)
        )

    async def _record_rejection(self, rejection: Rejection, raw: RawTask) -> RunOutcome:
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

    async def publish_outcome(self, outcome: RunOutcome, reply_to: str | None) -> None:
        payload = outcome.model_dump_json().encode()
        nc = self.broker.connection
        if outcome.task_id is not None:
            js = nc.jetstream()
            await js.publish(
                results_subject(self.settings.subject_prefix, outcome.task_id),
                payload,
                headers={"Nats-Msg-Id": f"outcome:{outcome.task_id}"},
            )
        if reply_to:
            await nc.publish(reply_to, payload)

    async def drain(self, grace_s: float) -> None:
        """Stop taking runs; wait up to `grace_s` for in-flight ones; release the rest.

        A released message is nak'ed before its run is cancelled, with a short delay so
        that this worker's own open pull requests (alive until the connection closes) do
        not take it back; another worker then resumes the run from what it recorded."""
        self.draining = True
        pending = set(self.in_flight)
        if not pending:
            return
        log.info("draining in-flight runs", runs=len(pending), grace_s=grace_s)
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            msg = self.in_flight.get(task)
            if msg is not None:
                with contextlib.suppress(Exception):
                    await msg.nack(delay=RELEASE_DELAY_S)
            task.cancel()
        if still:
            log.info("released unfinished runs", runs=len(still))
            await asyncio.wait(still, timeout=RELEASE_DELAY_S / 2)
