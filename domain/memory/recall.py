"""Recall: the past turns an agent is given before a run, as recorded on the run.

A catalog agent opts in with a `recall` table (`RecallSpec`). Before the run's first
model request the worker searches the memory view for the prompt and records what it
found (`AgentRun.MemoryRecalled`: the hits with their scores, and the embedder); the
run then sends those turns to the model as extra instructions (`recall_instructions`).
Resumes, forks and replays use the recorded hits, never the view, so a replay is
`identical` even after the memory view is dropped or has grown since.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MemoryHit", "Recall", "RecallScope", "RecallSpec", "recall_instructions"]

RecallScope = Literal["all", "session", "other_sessions"]


class RecallSpec(BaseModel):
    """A catalog agent's `recall = { ... }`: how many past turns to recall, from where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=3, ge=1, le=50)
    """At most this many turns."""
    scope: RecallScope = "all"
    """`all` sessions, the run's own `session` only, or `other_sessions` only."""
    min_score: float = Field(default=0.35, ge=-1.0, le=1.0)
    """Turns less similar than this (cosine) are left out."""
    same_agent: bool = False
    """Only turns of the same agent."""
    max_chars: int = Field(default=500, ge=20, le=20_000)
    """Each recalled text is cut to this many characters (as recorded)."""


class MemoryHit(BaseModel):
    """One stored text found by a search, with its cosine similarity to the query."""

    model_config = ConfigDict(frozen=True)

    score: float
    text: str
    role: Literal["user", "assistant"]
    """`user`: a prompt; `assistant`: a run's final output."""
    run_id: str
    task_id: str
    agent: str
    session_id: str | None
    at: datetime


class Recall(BaseModel):
    """What a run recalled: recorded as it was, so replay needs no memory view."""

    model_config = ConfigDict(frozen=True)

    query: str
    embedder: str
    hits: list[MemoryHit]
    error: str | None = None
    """Why nothing could be recalled (the memory view was unavailable), else None."""

    def as_event_fields(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "embedder": self.embedder,
            "hits": [hit.model_dump(mode="json") for hit in self.hits],
            "error": self.error,
        }


def recall_instructions(hits: list[MemoryHit]) -> str | None:
    """The instructions that give the model its recalled turns (None when there are none)."""
    if not hits:
        return None
    lines = [
        "Relevant turns recalled from earlier conversations (most similar first;"
        " use them only if they help):"
    ]
    for hit in hits:
        text = " ".join(hit.text.split())
        who = "user" if hit.role == "user" else f"assistant ({hit.agent})"
        where = f"session {hit.session_id}" if hit.session_id else "no session"
        lines.append(f"- [{who}, {where}, score {hit.score:.2f}] {text}")
    return "\n".join(lines)
