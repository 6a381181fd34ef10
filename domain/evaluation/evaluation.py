"""The evaluation aggregate: one per `RunEvaluation` task.

- `EvaluationStarted` fixes what is evaluated: the dataset (name, file digest), every
  case with its agent, prompt, expected output and run task id, the evaluator names
  and the thresholds. A redelivered task evaluates exactly these cases, even if the
  dataset file changed meanwhile.
- `CaseScored`, once per case: the run's outcome and every evaluator's answer. Recording
  it is how a worker claims the case: a second worker's save of the same case meets a
  version conflict, so a case is scored once.
- `EvaluationFinished`: the aggregate, the thresholds' breaches and whether it passed.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from agentledger.domain.errors import InvalidTransition
from agentledger.domain.evaluation.scores import CaseResult, Summary, Thresholds, summarise

__all__ = ["Evaluation", "evaluation_id_for"]

JSON = Any


def evaluation_id_for(task_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"agentledger:evaluation:{task_id}")


class Evaluation(Aggregate):
    TOPIC = "agentledger.Evaluation"

    class Event(Aggregate.Event):
        TOPIC = "agentledger.Evaluation.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "agentledger.Evaluation.Created"

    class EvaluationStarted(Created):
        """An evaluation task was accepted: its cases and how they are judged."""

        TOPIC = "agentledger.Evaluation.EvaluationStarted"
        class_version = 1
        task_id: str
        dataset: str
        dataset_digest: str
        label: str | None
        agents: dict[str, str]
        concurrency: int
        cases: list[JSON]
        """Each `{name, agent, prompt, expected_output, metadata, task_id}`."""
        evaluators: list[str]
        thresholds: JSON
        metadata: dict[str, str]

    class CaseScored(Event):
        """A case's run ended and was scored (a `CaseResult`)."""

        TOPIC = "agentledger.Evaluation.CaseScored"
        class_version = 1
        result: JSON

    class EvaluationFinished(Event):
        """Every case was scored: the aggregate and the thresholds' verdict."""

        TOPIC = "agentledger.Evaluation.EvaluationFinished"
        class_version = 1
        summary: JSON
        breaches: list[str]
        passed: bool
        duration_ms: float

    @staticmethod
    def create_id(task_id: str, **_: Any) -> UUID:
        return evaluation_id_for(task_id)

    @event(EvaluationStarted)
    def __init__(
        self,
        task_id: str,
        dataset: str,
        dataset_digest: str,
        label: str | None,
        agents: dict[str, str],
        concurrency: int,
        cases: list[JSON],
        evaluators: list[str],
        thresholds: JSON,
        metadata: dict[str, str],
    ) -> None:
        self.task_id = task_id
        self.dataset = dataset
        self.dataset_digest = dataset_digest
        self.label = label
        self.agents = agents
        self.concurrency = concurrency
        self.cases = cases
        self.evaluators = evaluators
        self.thresholds = thresholds
        self.metadata = metadata
        self.results: dict[str, JSON] = {}
        self.finished = False
        self.passed: bool | None = None
        self.breaches: list[str] = []
        self.duration_ms: float | None = None

    def score(self, result: CaseResult) -> None:
        if self.finished:
            raise InvalidTransition("score a case", "finished")
        if result.case in self.results:
            raise InvalidTransition(f"score case {result.case!r} again", "scored")
        if result.case not in {c["name"] for c in self.cases}:
            raise ValueError(f"no case {result.case!r} in this evaluation")
        self._scored(result=result.model_dump(mode="json"))

    @event(CaseScored)
    def _scored(self, result: JSON) -> None:
        self.results[result["case"]] = result

    def finish(self, duration_ms: float) -> Summary:
        if self.finished:
            raise InvalidTransition("finish an evaluation", "finished")
        summary = self.summary()
        breaches = Thresholds.model_validate(self.thresholds).breaches(summary)
        self._finished(
            summary=summary.model_dump(mode="json"),
            breaches=breaches,
            passed=not breaches,
            duration_ms=duration_ms,
        )
        return summary

    @event(EvaluationFinished)
    def _finished(
        self, summary: JSON, breaches: list[str], passed: bool, duration_ms: float
    ) -> None:
        self.finished = True
        self.passed = passed
        self.breaches = breaches
        self.duration_ms = duration_ms

    @property
    def pending(self) -> list[JSON]:
        """The cases not scored yet, in the dataset's order."""
        return [c for c in self.cases if c["name"] not in self.results]

    def case_results(self) -> list[CaseResult]:
        """The scored cases, in the dataset's order."""
        return [
            CaseResult.model_validate(self.results[c["name"]])
            for c in self.cases
            if c["name"] in self.results
        ]

    def summary(self) -> Summary:
        return summarise(self.case_results(), cases=len(self.cases))
