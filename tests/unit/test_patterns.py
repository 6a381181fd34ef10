"""The orchestration patterns driven by the real executor in memory (no NATS): what a
failed or dead-lettered child means under each fail policy."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger.domain.tasks import RunError, RunOutcome
from agentledger.handlers.graphs.executor import ChildTaskFailed
from agentledger.handlers.orchestration.patterns import parallel
from support.workflows import completed, recorded_workflow

pytestmark = pytest.mark.asyncio


def dead_lettered(agent: str) -> Any:
    """Children of `agent` were dead-lettered (their worker could not record them)."""

    def answer(child: dict[str, Any]) -> dict[str, Any]:
        if child["agent"] != agent:
            return completed(child)
        return RunOutcome(
            task_id=child["task_id"],
            agent=agent,
            status="failed",
            error=RunError(
                kind="dead_lettered",
                message="gave up after 3 deliveries (dead letter 7)",
                retryable=True,
            ),
        ).model_dump(mode="json")

    return answer


async def test_a_dead_lettered_child_fails_a_fail_fast_step_naming_it() -> None:
    graph = parallel(["a", "b", "c"], policy="fail_fast")
    with pytest.raises(ChildTaskFailed) as failed:
        await recorded_workflow("go", dead_lettered("b"), graph=graph)  # type: ignore[arg-type]
    assert "b (wf-1:child-1-" in str(failed.value)
    assert "dead_lettered: gave up after 3 deliveries (dead letter 7)" in str(failed.value)


async def test_best_effort_merges_what_completed_and_lists_the_dead_letter() -> None:
    graph = parallel(["a", "b", "c"], policy="best_effort")
    run, _ = await recorded_workflow("go", dead_lettered("b"), graph=graph)  # type: ignore[arg-type]
    assert run.status == "completed"
    assert run.output["results"] == {"a": "a did: go", "c": "c did: go"}
    (failure,) = run.output["failed"]
    assert (failure["agent"], failure["error"]["kind"]) == ("b", "dead_lettered")


async def test_every_child_failing_fails_even_a_best_effort_step() -> None:
    graph = parallel(["b"], policy="best_effort")
    with pytest.raises(ChildTaskFailed):
        await recorded_workflow("go", dead_lettered("b"), graph=graph)  # type: ignore[arg-type]


async def test_a_parallel_fan_out_is_one_broadcast_each_child_answers() -> None:
    from agentledger.domain.orchestration.flow import workflow_messages

    graph = parallel(["a", "b", "c"], policy="best_effort")
    run, events = await recorded_workflow("go", graph=graph)  # type: ignore[arg-type]
    assert run.status == "completed"
    messages = workflow_messages(events)
    broadcast = messages[0]
    assert (broadcast.kind, broadcast.sender, broadcast.receiver, broadcast.content) == (
        "broadcast",
        "relay",
        "all",
        "go",
    )
    responses = messages[1:]
    assert sorted(m.sender for m in responses) == ["a", "b", "c"]
    assert {m.causation_id for m in responses} == {broadcast.message_id}
    assert len({m.message_id for m in responses}) == 3
