"""Running an evaluation: dispatch its cases as agent tasks, score each outcome, record.

Crash safety comes from three recorded facts. The cases and their run task ids are
fixed by `EvaluationStarted`; a case's run is an ordinary run keyed by that task id
(exactly once, resumable); a case's score is recorded once (`CaseScored`). A
redelivered evaluation therefore skips the scored cases, finds the runs that finished
meanwhile in the store without dispatching anything, and re-dispatches the rest (the
task id makes a repeat a no-op for a run already done or in flight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from agentledger.domain.errors import ErrorKind
from agentledger.domain.evaluation.evaluation import Evaluation, evaluation_id_for
from agentledger.domain.evaluation.scores import CaseResult
from agentledger.domain.evaluation.tasks import (
    EvaluationOutcome,
    EvaluationProgress,
    RunEvaluation,
    case_metadata,
    case_task_id,
)
from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent, RunError, RunOutcome
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.evaluation.datasets import (
    DatasetInvalid,
    LoadedDataset,
    load_dataset,
)
from agentledger.handlers.evaluation.evaluators import judge_models
from agentledger.handlers.evaluation.scoring import RunFacts, run_facts, score_run
from agentledger.infra.event_store import AsyncEventStore, ConcurrencyConflict

__all__ = ["CaseDispatch", "EvaluationRejected", "EvaluationRunner", "evaluation_outcome"]

log = structlog.get_logger("agentledger.evaluation")

CaseDispatch = Callable[[RunAgent], Awaitable[RunOutcome]]
"""Runs a case's task to its outcome (over NATS: publish, then wait for the result)."""
Progress = Callable[[EvaluationProgress], Awaitable[None]]

_TERMINAL = ("completed", "failed", "paused")


class EvaluationRejected(Exception):
    """The evaluation task cannot be run as asked (unknown dataset, bad file, bad case)."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def evaluation_outcome(evaluation: Evaluation) -> EvaluationOutcome:
    summary = evaluation.summary()
    return EvaluationOutcome(
        task_id=evaluation.task_id,
        status="completed",
        dataset=evaluation.dataset,
        evaluation_id=str(evaluation.id),
        cases=summary.cases,
        passed=summary.passed,
        failed=summary.failed,
        errored=summary.errored,
        pass_rate=summary.pass_rate,
        thresholds_met=evaluation.passed,
        breaches=list(evaluation.breaches),
        duration_ms=evaluation.duration_ms,
    )


class EvaluationRunner:
    def __init__(
        self,
        *,
        store: AsyncEventStore,
        catalog: Catalog,
        dispatch: CaseDispatch,
        default_concurrency: int = 4,
        on_progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.dispatch = dispatch
        self.default_concurrency = default_concurrency
        self.on_progress = on_progress

    def dataset(self, name: str) -> LoadedDataset:
        entry = self.catalog.datasets.get(name)
        if entry is None:
            known = ", ".join(sorted(self.catalog.datasets)) or "none"
            raise EvaluationRejected(
                ErrorKind.UNKNOWN_DATASET, f"no dataset {name!r} in the catalog (datasets: {known})"
            )
        try:
            return load_dataset(entry, agents=set(self.catalog.entries))
        except DatasetInvalid as e:
            raise EvaluationRejected(ErrorKind.DATASET_INVALID, str(e)) from None

    async def run(self, task: RunEvaluation) -> EvaluationOutcome:
        dataset = self.dataset(task.dataset)
        evaluation = await self.store.get(evaluation_id_for(task.task_id), Evaluation)
        if evaluation is None:
            evaluation = await self._start(task, dataset)
        elif evaluation.dataset_digest != dataset.digest:
            log.warning(
                "the dataset file changed since the evaluation started: its recorded cases"
                " run, scored by the file's evaluators as they are now",
                task_id=task.task_id,
                dataset=task.dataset,
            )
        if not evaluation.finished:
            evaluation = await self._run_cases(evaluation, dataset)
        return evaluation_outcome(evaluation)

    async def _start(self, task: RunEvaluation, dataset: LoadedDataset) -> Evaluation:
        cases = dataset.cases
        if task.cases is not None:
            wanted = set(task.cases)
            missing = sorted(wanted - {c.name for c in cases})
            if missing:
                raise EvaluationRejected(
                    ErrorKind.INVALID_PAYLOAD,
                    f"dataset {task.dataset!r} has no case(s) {', '.join(map(repr, missing[:5]))}",
                )
            cases = [c for c in cases if c.name in wanted]
        for agent in task.agents.values():
            if agent not in self.catalog.entries:
                raise EvaluationRejected(
                    ErrorKind.UNKNOWN_AGENT, f"agents: no agent {agent!r} in the catalog"
                )
        recorded = []
        for index, case in enumerate(cases):
            agent = task.agents.get(case.agent) or task.agents.get("*") or case.agent
            spec = case.as_json(case_task_id(task.task_id, index))
            spec["agent"] = agent
            if agent != case.agent:
                spec["dataset_agent"] = case.agent
            recorded.append(spec)
        concurrency = task.concurrency or dataset.entry.concurrency or self.default_concurrency
        evaluation = Evaluation(
            task_id=task.task_id,
            dataset=task.dataset,
            dataset_digest=dataset.digest,
            label=task.label,
            agents=dict(task.agents),
            concurrency=concurrency,
            cases=recorded,
            evaluators=dataset.evaluator_names(),
            thresholds=dataset.entry.thresholds.model_dump(mode="json"),
            metadata=dict(task.metadata),
        )
        try:
            await self.store.save(evaluation)
        except ConcurrencyConflict:  # another delivery started it: its record stands
            again = await self.store.get(evaluation.id, Evaluation)
            assert again is not None
            return again
        log.info(
            "evaluation started",
            task_id=task.task_id,
            dataset=task.dataset,
            cases=len(recorded),
            concurrency=concurrency,
        )
        return evaluation

    async def _run_cases(self, evaluation: Evaluation, dataset: LoadedDataset) -> Evaluation:
        """Runs and scores the pending cases, then finishes; returns the aggregate as saved."""
        started_at: datetime = evaluation.created_on
        gate = asyncio.Semaphore(max(1, evaluation.concurrency))
        lock = asyncio.Lock()
        state = {"evaluation": evaluation}
        total = len(evaluation.cases)
        models = self._judge_models()

        async def one(case: dict[str, Any]) -> None:
            async with gate:
                facts = await self._case_facts(evaluation, case)
                with judge_models(models):
                    result = await self._score(case, facts, dataset)
            async with lock:
                current = await self._record(state["evaluation"], result)
                state["evaluation"] = current
                summary = current.summary()
                await self._progress(
                    EvaluationProgress(
                        task_id=current.task_id,
                        total=total,
                        done=summary.done,
                        passed=summary.passed,
                        case=result.case,
                        case_passed=result.passed,
                    )
                )

        async with asyncio.TaskGroup() as group:
            for case in evaluation.pending:
                group.create_task(one(case))
        current = state["evaluation"]
        if not current.finished:
            elapsed = (datetime.now(UTC) - started_at).total_seconds() * 1000
            current.finish(duration_ms=max(0.0, elapsed))
            try:
                await self.store.save(current)
            except ConcurrencyConflict:
                again = await self.store.get(current.id, Evaluation)
                assert again is not None
                current = again
            summary = current.summary()
            log.info(
                "evaluation finished",
                task_id=current.task_id,
                passed=summary.passed,
                cases=summary.cases,
                thresholds_met=current.passed,
            )
            await self._progress(
                EvaluationProgress(
                    task_id=current.task_id,
                    total=total,
                    done=summary.done,
                    passed=summary.passed,
                    finished=True,
                )
            )
        return current

    async def _case_facts(self, evaluation: Evaluation, case: dict[str, Any]) -> RunFacts:
        task_id = case["task_id"]
        run = await self.store.get(run_id_for(task_id), AgentRun)
        if run is None or run.status not in _TERMINAL:
            task = RunAgent(
                task_id=task_id,
                agent=case["agent"],
                prompt=case["prompt"],
                metadata=case_metadata(evaluation.task_id, case["name"], evaluation.label),
            )
            outcome = await self.dispatch(task)
            if outcome.status == "rejected" or outcome.run_id is None:
                return _facts_of_outcome(task, outcome)
        events = await self.store.events(run_id_for(task_id))
        return run_facts(events)

    async def _score(
        self, case: dict[str, Any], facts: RunFacts, dataset: LoadedDataset
    ) -> CaseResult:
        entry = self.catalog.entries.get(case["agent"])
        output_type: Any = str
        if entry is not None:
            output_type = getattr(entry.agent, "output_type", str)
        return await score_run(
            case=case["name"],
            facts=facts,
            evaluators=dataset.evaluators_for(case["name"]),
            expected_output=case.get("expected_output"),
            metadata=case.get("metadata"),
            output_type=output_type,
            agent=case["agent"],
        )

    async def _record(self, evaluation: Evaluation, result: CaseResult) -> Evaluation:
        """Save the case's score; another delivery's score of it stands."""
        for _ in range(5):
            if result.case in evaluation.results:
                return evaluation
            evaluation.score(result)
            try:
                await self.store.save(evaluation)
                return evaluation
            except ConcurrencyConflict:
                again = await self.store.get(evaluation.id, Evaluation)
                assert again is not None
                evaluation = again
        raise ConcurrencyConflict(f"cannot record case {result.case!r}: too many conflicts")

    def _judge_models(self) -> dict[str, Any]:
        models = {}
        for name, entry in self.catalog.entries.items():
            try:
                models[name] = entry.model or entry.agent.model
            except Exception:  # an agent that cannot load cannot judge
                continue
        return models

    async def _progress(self, progress: EvaluationProgress) -> None:
        if self.on_progress is None:
            return
        try:
            await self.on_progress(progress)
        except Exception as e:  # progress is a courtesy
            log.debug("progress not published", error=str(e))


def _facts_of_outcome(task: RunAgent, outcome: RunOutcome) -> RunFacts:
    error = outcome.error
    return RunFacts(
        task_id=task.task_id,
        run_id=outcome.run_id or "",
        agent=task.agent,
        prompt=task.prompt,
        status=outcome.status,
        output=outcome.output,
        error=f"{error.kind}: {error.message}" if error else None,
        duration_ms=outcome.duration_ms,
        cost_usd=outcome.cost_usd,
    )


def rejected_outcome(
    task_id: str | None, dataset: str | None, kind: str, reason: str
) -> EvaluationOutcome:
    return EvaluationOutcome(
        task_id=task_id,
        status="rejected",
        dataset=dataset,
        error=RunError(kind=kind, message=reason),
    )
