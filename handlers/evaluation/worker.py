"""The eval worker: takes `<prefix>.tasks.eval.<dataset>` messages from its own durable
consumer (`<prefix>-eval-workers`) and runs each evaluation (`EvaluationRunner`).

An evaluation holds one delivery for as long as its cases run (the consumer's heartbeats
keep it), but no agent slot: its cases are ordinary agent tasks that any worker takes.
The delivery rules are the other workers': a bad task is rejected, recorded and
answered; a transient failure (a case that outlived `AGENTLEDGER_EVAL_CASE_TIMEOUT_S`,
the store down) naks the evaluation to come back with its scored cases kept; the last
delivery ends it `failed`.
"""

from __future__ import annotations

import structlog
from faststream.nats import NatsBroker

from agentledger.domain.errors import ErrorKind
from agentledger.domain.evaluation.tasks import (
    EvaluationOutcome,
    EvaluationProgress,
    RunEvaluation,
)
from agentledger.domain.subjects import (
    eval_subject,
    eval_workers_consumer,
    evaluation_progress_subject,
    results_subject,
)
from agentledger.domain.tasks import RunAgent, RunError, RunOutcome
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.client import LedgerClient, OutcomeTimeout
from agentledger.handlers.evaluation.runner import EvaluationRejected, EvaluationRunner
from agentledger.handlers.intake import RawTask, Rejection, parse_model
from agentledger.handlers.kind_worker import KindWorker, Received
from agentledger.handlers.task_consumer import Delivery
from agentledger.handlers.worker import TRANSIENT_ERRORS, nak_or_give_up
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict
from agentledger.infra.settings import Settings

__all__ = ["CaseTimedOut", "EvalWorker", "parse_eval_task"]

log = structlog.get_logger("agentledger.evaluation")


class CaseTimedOut(Exception):
    """A case's run gave no outcome in time: the evaluation comes back later."""


_TRANSIENT = (*TRANSIENT_ERRORS, ConcurrencyConflict, CaseTimedOut)


def parse_eval_task(raw: RawTask) -> RunEvaluation:
    """The evaluation task in `raw`, or a `Rejection` saying exactly what is wrong."""
    task = parse_model(raw, RunEvaluation, "RunEvaluation")
    key = task.task_id
    dataset = raw.subject.rsplit(".", 1)[-1]
    if task.dataset != dataset:
        raise Rejection(
            ErrorKind.INVALID_PAYLOAD,
            f"dataset {task.dataset!r} does not match the subject's {dataset!r}",
            key=key,
            task_id=task.task_id,
        )
    return task


class EvalWorker(KindWorker):
    name = "agentledger-eval-worker"
    what = "evaluation tasks"

    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        store: AsyncEventStore,
        catalog: Catalog,
    ) -> None:
        prefix = settings.subject_prefix
        super().__init__(
            settings=settings,
            broker=broker,
            store=store,
            subject=eval_subject(prefix, "*"),
            durable=eval_workers_consumer(prefix),
            logger=log,
        )
        self.runner = EvaluationRunner(
            store=store,
            catalog=catalog,
            dispatch=self._dispatch,
            default_concurrency=settings.eval_concurrency,
            on_progress=self._progress,
        )

    async def _dispatch(self, task: RunAgent) -> RunOutcome:
        client = LedgerClient(self.broker.connection, prefix=self.prefix)
        stored = await client.outcome(task.task_id)
        if stored is not None:
            return stored
        await client.submit(task)
        try:
            return await client.wait(task.task_id, timeout=self.settings.eval_case_timeout_s)
        except OutcomeTimeout:
            raise CaseTimedOut(
                f"case task {task.task_id} gave no outcome within"
                f" {self.settings.eval_case_timeout_s:g} s (AGENTLEDGER_EVAL_CASE_TIMEOUT_S)"
            ) from None

    async def _progress(self, progress: EvaluationProgress) -> None:
        await self.broker.connection.publish(
            evaluation_progress_subject(self.prefix, progress.task_id),
            progress.model_dump_json().encode(),
        )

    async def process(self, received: Received, msg: Delivery) -> None:
        raw, reply_to = received.raw, received.reply_to
        task: RunEvaluation | None = None
        try:
            task = parse_eval_task(raw)
            try:
                outcome = await self.runner.run(task)
            except EvaluationRejected as e:
                raise Rejection(e.kind, e.reason, key=task.task_id, task_id=task.task_id) from None
            await self._answer(outcome, reply_to)
            await msg.ack()
        except Rejection as rejection:
            await self._reject(msg, rejection, received, task)
        except Exception as e:
            give_up = await nak_or_give_up(
                msg, e, received.delivered, received.final, received.bound, _TRANSIENT
            )
            if give_up is not None:
                kind, reason = give_up
                await self._dead_letter(msg, raw, task, str(kind), reason, reply_to)

    async def _answer(self, outcome: EvaluationOutcome, reply_to: str | None) -> None:
        payload = outcome.model_dump_json().encode()
        nc = self.broker.connection
        if outcome.task_id is not None:
            kind = outcome.error.kind if outcome.error else ""
            await nc.jetstream().publish(
                results_subject(self.prefix, outcome.task_id),
                payload,
                headers={"Nats-Msg-Id": f"outcome:eval:{outcome.task_id}:{outcome.status}:{kind}"},
            )
        if reply_to:
            await nc.publish(reply_to, payload)

    async def _reject(
        self,
        msg: Delivery,
        rejection: Rejection,
        received: Received,
        task: RunEvaluation | None,
    ) -> None:
        recorded = await self.record_rejection(msg, rejection, received)
        if recorded is None:
            return
        outcome = EvaluationOutcome(
            task_id=rejection.task_id,
            status="rejected",
            dataset=task.dataset if task else None,
            error=recorded.error,
        )
        try:
            await self._answer(outcome, received.reply_to)
        except Exception as e:
            log.warning("cannot publish the rejection", error=str(e))
        await msg.reject()

    async def _dead_letter(
        self,
        msg: Delivery,
        raw: RawTask,
        message: object,
        kind: str,
        reason: str,
        reply_to: str | None,
    ) -> None:
        task = message if isinstance(message, RunEvaluation) else None
        sequence = await self.keep_dead(msg, raw, task.task_id if task else None, kind, reason)
        if sequence is None:
            return
        if task is not None:
            outcome = EvaluationOutcome(
                task_id=task.task_id,
                status="failed",
                dataset=task.dataset,
                error=RunError(
                    kind=str(ErrorKind.DEAD_LETTERED),
                    message=f"{reason} (dead letter {sequence}: `agentledger dead retry"
                    f" {sequence}` takes the evaluation up again; scored cases are kept)",
                    retryable=True,
                ),
            )
            try:
                await self._answer(outcome, reply_to)
            except Exception as e:
                log.warning("cannot publish the dead-letter outcome", error=str(e))
        await msg.reject()
