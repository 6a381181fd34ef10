"""Whose outcome a rejection may be stored as: never over a run of either kind."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger.domain.errors import ErrorKind
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.run import AgentRun
from agentledger.handlers.answers import TaskAnswers
from agentledger.handlers.intake import RawTask, Rejection
from agentledger.infra.event_store import AsyncEventStore, EventStore

pytestmark = pytest.mark.asyncio


def raw(task_id: str) -> RawTask:
    return RawTask(body=b"{}", subject="p.tasks.run.x", msg_id=task_id, fallback_key="S:1")


async def answers_with(*runs: Any) -> TaskAnswers:
    store = AsyncEventStore(EventStore.in_memory(), 0, retry_s=0)
    for run in runs:
        await store.save(run)
    return TaskAnswers(broker=None, store=store, prefix="p")  # type: ignore[arg-type]


async def test_a_rejection_speaks_for_a_task_id_no_run_has() -> None:
    answers = await answers_with()
    rejection = Rejection(ErrorKind.INVALID_PAYLOAD, "bad", key="t-1", task_id="t-1")
    assert await answers.speaks_for(rejection, raw("t-1"))


async def test_a_rejection_never_replaces_the_outcome_of_an_agent_or_a_graph_run() -> None:
    agent_run = AgentRun(
        task_id="t-agent",
        agent="echo",
        prompt="hi",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    graph_run = GraphRun(
        task_id="t-graph",
        graph="g",
        inputs=None,
        state=None,
        metadata={},
        max_steps=10,
        deadline=None,
    )
    answers = await answers_with(agent_run, graph_run)
    for task_id in ("t-agent", "t-graph"):
        rejection = Rejection(ErrorKind.INVALID_PAYLOAD, "bad", key=task_id, task_id=task_id)
        assert not await answers.speaks_for(rejection, raw(task_id))
