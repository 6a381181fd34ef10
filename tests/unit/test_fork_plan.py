"""Where a run may be forked (agentledger.domain.fork)."""

from __future__ import annotations

from typing import Any

import pytest

from agentledger.domain.fork import ForkError, plan_fork
from agentledger.domain.run import AgentRun


def parent_events() -> list[Any]:
    """A calculator-shaped run: 1 requested, 2 request, 3 response asking for a tool, 4-5
    the tool, 6 request with its return, 7 the answer, 8 completed."""
    run = AgentRun(
        task_id="p",
        agent="calculator",
        prompt="add 1 and 2",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    run.send_model_request({"kind": "request", "parts": [{"part_kind": "user-prompt"}]})
    run.receive_model_response(
        {"kind": "response", "parts": [{"part_kind": "tool-call", "tool_call_id": "c1"}]},
        "m",
        1,
        1,
    )
    run.start_tool_call("c1", "add", {"a": 1, "b": 2})
    run.finish_tool_call("c1", "add", 3)
    run.send_model_request({"kind": "request", "parts": [{"part_kind": "tool-return"}]})
    run.receive_model_response({"kind": "response", "parts": [{"part_kind": "text"}]}, "m", 1, 1)
    run.complete("3", None, 1.0)
    return list(run.collect_events())


def test_a_fork_copies_the_parents_steps_up_to_the_point() -> None:
    plan = plan_fork(parent_events(), 5, None)
    assert [type(e).__name__ for e in plan.copied] == [
        "ModelRequestSent",
        "ModelResponseReceived",
        "ToolCallStarted",
        "ToolCallFinished",
    ]
    assert (plan.prompt, plan.fork_prompt) == ("add 1 and 2", None)


def test_a_prompt_at_1_replaces_the_task_prompt_and_later_follows_the_answer() -> None:
    events = parent_events()
    at_one = plan_fork(events, 1, "add 5 and 5")
    assert (at_one.copied, at_one.prompt, at_one.fork_prompt) == ((), "add 5 and 5", None)
    follow = plan_fork(events, 7, "now multiply")
    assert (follow.prompt, follow.fork_prompt) == ("add 1 and 2", "now multiply")


@pytest.mark.parametrize(
    ("at", "prompt", "message"),
    [
        (0, None, "outside 1..7"),
        (8, None, "outside 1..7"),
        (4, None, "splits tool call"),
        (7, None, "already answered"),
        (3, "again", "valid points|for this run: 1, 7"),
        (1, "", "empty"),
    ],
)
def test_points_that_do_not_fit_are_refused_with_the_reason(
    at: int, prompt: str | None, message: str
) -> None:
    with pytest.raises(ForkError, match=message):
        plan_fork(parent_events(), at, prompt)
