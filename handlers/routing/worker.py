"""The route worker: takes `<prefix>.tasks.route` messages from its own durable consumer
(`<prefix>-route-workers`), decides the route once, and runs the chosen target.

Exactly once: the decision is an aggregate whose id comes from the task id, so a
redelivered task finds its recorded decision and never scores again; the routed run has
the same task id (`run_id_for(task_id)` / `graph_run_id_for(task_id)`), so it resumes
where it stopped like any run. The ack follows the outcome, as for every task. The
delivery rules (poison input rejected and recorded, transient errors nakked with
backoff, the last delivery ending the run as failed or dead-lettering what cannot be
recorded) are the agent worker's.
"""

from __future__ import annotations

import structlog
from faststream.nats import NatsBroker

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.tasks import GraphOutcome, RunGraph
from agentledger.domain.ids import graph_run_id_for, route_decision_id_for, run_id_for
from agentledger.domain.routing.decision import RouteDecision
from agentledger.domain.routing.tasks import RouteChoice, RouteOutcome, RouteTask
from agentledger.domain.subjects import route_subject, route_workers_consumer
from agentledger.domain.tasks import (
    METADATA_MAX_KEYS,
    RunAgent,
    RunError,
    RunOutcome,
    UsageLimitsSpec,
)
from agentledger.handlers.graphs.runner import GraphRejected, GraphRunner
from agentledger.handlers.intake import RawTask, Rejection
from agentledger.handlers.kind_worker import KindWorker, Received
from agentledger.handlers.routing.intake import parse_route_task
from agentledger.handlers.routing.router import Router
from agentledger.handlers.runner import AgentRunner
from agentledger.handlers.task_consumer import Delivery
from agentledger.handlers.worker import TRANSIENT_ERRORS, nak_or_give_up
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict
from agentledger.infra.settings import Settings

__all__ = ["RouteWorker", "choice_of", "decide_and_record"]

log = structlog.get_logger("agentledger.routing")

_TRANSIENT = (*TRANSIENT_ERRORS, ConcurrencyConflict)


def choice_of(decision: RouteDecision) -> RouteChoice:
    best = max(decision.scores, key=lambda n: decision.scores[n]) if decision.scores else None
    return RouteChoice(
        name=decision.chosen,
        target=decision.target,
        target_kind=decision.target_kind,  # type: ignore[arg-type]
        score=decision.scores.get(decision.chosen) if decision.chosen else None,
        threshold=decision.thresholds.get(best) if best else None,
        fallback=decision.fallback,
        method=decision.method,
        scores=decision.scores,
    )


async def decide_and_record(
    store: AsyncEventStore, router: Router, task: RouteTask
) -> RouteDecision:
    """The task's decision: the recorded one, or a new one scored and saved now."""
    found = await store.get(route_decision_id_for(task.task_id), RouteDecision)
    if found is not None:
        return found
    decision = await router.adecide(task.prompt)
    route = router.spec.route(decision.chosen) if decision.chosen else None
    run_id = None
    if route is not None:
        run_id = str(run_id_for(task.task_id) if route.agent else graph_run_id_for(task.task_id))
    recorded = RouteDecision(
        task_id=task.task_id,
        prompt=task.prompt,
        session_id=task.session_id,
        metadata=dict(task.metadata),
        usage_limits=task.usage_limits.model_dump() if task.usage_limits else {},
        deadline=task.deadline.isoformat() if task.deadline else None,
        scores=decision.scores,
        thresholds=router.thresholds(),
        chosen=decision.chosen,
        target_kind=route.target_kind if route else None,
        target=route.target if route else None,
        fallback=decision.fallback,
        method=router.method,
        embedder=router.embedder.name,
        routes_digest=router.digest,
        fit_version=router.fit_version,
        run_id=run_id,
    )
    try:
        await store.save(recorded)
    except ConcurrencyConflict:  # another delivery decided first: its decision stands
        again = await store.get(route_decision_id_for(task.task_id), RouteDecision)
        assert again is not None
        return again
    log.info(
        "routed",
        task_id=task.task_id,
        route=decision.chosen,
        reason=decision.reason,
        best=decision.best,
        score=decision.scores.get(decision.best or "", None),
    )
    return recorded


def _routed_task(decision: RouteDecision) -> RunAgent:
    metadata = dict(decision.metadata)
    if len(metadata) < METADATA_MAX_KEYS:
        metadata.setdefault("route", decision.chosen or "")
    return RunAgent(
        task_id=decision.task_id,
        agent=decision.target or "",
        prompt=decision.prompt,
        session_id=decision.session_id,
        metadata=metadata,
        usage_limits=UsageLimitsSpec(**decision.usage_limits) if decision.usage_limits else None,
        deadline=decision.deadline,  # type: ignore[arg-type]
    )


def _from_run(choice: RouteChoice, outcome: RunOutcome | GraphOutcome) -> RouteOutcome:
    if isinstance(outcome, RunOutcome):
        return RouteOutcome(
            task_id=outcome.task_id,
            status=outcome.status,
            route=choice,
            run_id=outcome.run_id,
            agent=outcome.agent,
            session_id=outcome.session_id,
            output=outcome.output,
            usage=outcome.usage,
            cost_usd=outcome.cost_usd,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
        )
    return RouteOutcome(
        task_id=outcome.task_id,
        status=outcome.status,
        route=choice,
        run_id=outcome.run_id,
        graph=outcome.graph,
        output=outcome.output,
        duration_ms=outcome.duration_ms,
        error=outcome.error,
    )


class RouteWorker(KindWorker):
    name = "agentledger-route-worker"
    what = "route tasks"

    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        store: AsyncEventStore,
        router: Router,
        agents: AgentRunner,
        graphs: GraphRunner,
    ) -> None:
        prefix = settings.subject_prefix
        super().__init__(
            settings=settings,
            broker=broker,
            store=store,
            subject=route_subject(prefix),
            durable=route_workers_consumer(prefix),
            logger=log,
        )
        self.router = router
        self.agents = agents
        self.graphs = graphs

    async def process(self, received: Received, msg: Delivery) -> None:
        raw, reply_to = received.raw, received.reply_to
        task: RouteTask | None = None
        try:
            task = parse_route_task(raw, max_prompt_chars=self.settings.max_prompt_chars)
            decision = await decide_and_record(self.store, self.router, task)
            outcome = await self._run(decision, received.final)
            if outcome.status != "waiting":  # a graph waiting for its children: the
                # graph worker answers when it ends (same task id)
                await self.answers.publish(outcome, reply_to)  # type: ignore[arg-type]
            await msg.ack()
        except Rejection as rejection:
            await self._reject(msg, rejection, received)
        except Exception as e:
            give_up = await nak_or_give_up(
                msg, e, received.delivered, received.final, received.bound, _TRANSIENT
            )
            if give_up is not None:
                await self._give_up(msg, raw, task, *give_up, reply_to)

    async def _run(self, decision: RouteDecision, final: bool) -> RouteOutcome:
        choice = choice_of(decision)
        if decision.chosen is None or decision.target is None:
            best = max(decision.scores.items(), key=lambda kv: kv[1], default=(None, None))
            return RouteOutcome(
                task_id=decision.task_id,
                status="failed",
                route=choice,
                session_id=decision.session_id,
                error=RunError(
                    kind=str(ErrorKind.NO_ROUTE),
                    message=f"no route fits the prompt (best: {best[0]!r} at"
                    f" {best[1] if best[1] is None else round(best[1], 3)}; no fallback route)",
                ),
            )
        if decision.target_kind == "agent":
            outcome = await self.agents.run(_routed_task(decision), final_attempt=final)
            return _from_run(choice, outcome)
        try:
            graph_outcome = await self.graphs.run(
                RunGraph(
                    task_id=decision.task_id,
                    graph=decision.target,
                    inputs=decision.prompt,
                    metadata=_routed_task(decision).metadata,
                )
            )
        except GraphRejected as e:
            return RouteOutcome(
                task_id=decision.task_id,
                status="failed",
                route=choice,
                graph=decision.target,
                error=RunError(kind=str(e.kind), message=str(e)),
            )
        return _from_run(choice, graph_outcome)

    async def _reject(
        self,
        msg: Delivery,
        rejection: Rejection,
        received: Received,
    ) -> None:
        recorded = await self.record_rejection(msg, rejection, received)
        if recorded is None:
            return
        outcome = RouteOutcome(
            task_id=rejection.task_id,
            status="rejected",
            run_id=recorded.run_id,
            error=recorded.error,
        )
        store = await self.answers.speaks_for(rejection, received.raw)
        await self.answers.publish(outcome, received.reply_to, store=store)  # type: ignore[arg-type]
        await msg.reject()

    async def _give_up(
        self,
        msg: Delivery,
        raw: RawTask,
        task: RouteTask | None,
        kind: ErrorKind,
        reason: str,
        reply_to: str | None,
    ) -> None:
        """A routed agent run that exists ends as failed; else the message is dead-lettered."""
        if task is not None:
            try:
                decision = await self.store.get(route_decision_id_for(task.task_id), RouteDecision)
                if decision is not None and decision.target_kind == "agent":
                    outcome = await self.agents.give_up(_routed_task(decision), kind, reason)
                    await self.answers.publish(_from_run(choice_of(decision), outcome), reply_to)  # type: ignore[arg-type]
                    await msg.reject()
                    return
            except Exception as e:
                log.warning("cannot record the failure; dead-lettering", error=str(e))
        await self._dead_letter(msg, raw, task, str(kind), reason, reply_to)

    async def _dead_letter(
        self,
        msg: Delivery,
        raw: RawTask,
        task: RouteTask | None,
        kind: str,
        reason: str,
        reply_to: str | None,
    ) -> None:
        sequence = await self.keep_dead(msg, raw, task.task_id if task else None, kind, reason)
        if sequence is None:
            return
        if task is not None:
            outcome = RouteOutcome(
                task_id=task.task_id,
                status="failed",
                error=RunError(
                    kind=str(ErrorKind.DEAD_LETTERED),
                    message=f"{reason} (dead letter {sequence}:"
                    f" `agentledger dead retry {sequence}` requeues it)",
                    retryable=True,
                ),
            )
            try:
                await self.answers.publish(outcome, reply_to)  # type: ignore[arg-type]
            except Exception as e:
                log.warning("cannot publish the dead-letter outcome", error=str(e))
        await msg.reject()
