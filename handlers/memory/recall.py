"""Recall for agents: the memory search a run does before its first model request.

The runner asks a `Recaller` once, when it creates the run, and records the answer
(`AgentRun.MemoryRecalled`) in the same save as the run's creation; from then on the
recorded hits are the truth (resume, fork, replay). A memory view that cannot be
searched (the view store down, the embedder failing) does not stop the run: the recall
is recorded with its `error` and no hits, and the run goes on without recalled turns.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from agentledger.domain.memory.recall import MemoryHit, Recall, RecallSpec
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.memory.reader import MemoryReader

__all__ = ["MemoryRecaller", "Recaller", "RecordedRecall", "UnavailableRecaller"]

log = structlog.get_logger("agentledger.memory")


class Recaller(Protocol):
    async def recall(self, task: RunAgent, spec: RecallSpec) -> Recall: ...


class MemoryRecaller:
    """Recalls from the memory view through a `MemoryReader`."""

    def __init__(self, reader: MemoryReader) -> None:
        self.reader = reader

    async def recall(self, task: RunAgent, spec: RecallSpec) -> Recall:
        embedder = self.reader.embedder.name
        if spec.scope == "session" and task.session_id is None:
            return Recall(query=task.prompt, embedder=embedder, hits=[])
        try:
            hits = await self.reader.asearch(
                task.prompt[:8_000],
                spec.k,
                agent=task.agent if spec.same_agent else None,
                session=task.session_id if spec.scope == "session" else None,
                exclude_session=task.session_id if spec.scope == "other_sessions" else None,
            )
        except Exception as e:  # the run goes on without recalled turns; said in the event
            log.warning("recall failed; the run goes on without it", error=repr(e))
            return Recall(query=task.prompt, embedder=embedder, hits=[], error=repr(e)[:500])
        kept = [
            hit
            if len(hit.text) <= spec.max_chars
            else hit.model_copy(update={"text": hit.text[: spec.max_chars - 1] + "…"})
            for hit in hits
            if hit.score >= spec.min_score
        ]
        return Recall(query=task.prompt, embedder=embedder, hits=kept)


class UnavailableRecaller:
    """Recall when the memory cannot be searched at all (its embedder did not load): every
    run records the reason, with no hits, and goes on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def recall(self, task: RunAgent, spec: RecallSpec) -> Recall:
        return Recall(query=task.prompt, embedder="unavailable", hits=[], error=self.reason[:500])


class RecordedRecall:
    """Serves the recall a recorded run made (replay): the memory view is not read."""

    def __init__(self, recorded: Recall | None) -> None:
        self._recorded = recorded

    async def recall(self, task: RunAgent, spec: RecallSpec) -> Recall:
        if self._recorded is None:
            return Recall(query=task.prompt, embedder="none", hits=[], error="not recorded")
        return self._recorded

    @classmethod
    def of(cls, events: list[object]) -> RecordedRecall:
        from agentledger.domain.run import AgentRun

        for event in events:
            if isinstance(event, AgentRun.MemoryRecalled):
                return cls(
                    Recall(
                        query=event.query,
                        embedder=event.embedder,
                        hits=[MemoryHit.model_validate(h) for h in event.hits],
                        error=event.error,
                    )
                )
        return cls(None)
