"""The comparison behind replay: what counts, what does not, and where it reports."""

from __future__ import annotations

from typing import Any

from agentledger.domain.divergence import canonical_order, comparable, first_divergence
from agentledger.domain.timeline import EventRecord


def rec(version: int, name: str, **data: Any) -> EventRecord:
    return EventRecord(
        aggregate_type="AgentRun",
        aggregate_id="a",
        version=version,
        name=name,
        timestamp=f"2026-01-01T00:00:{version:02d}+00:00",
        data=data,
    )


def response(version: int, *call_ids: str) -> EventRecord:
    parts = [{"part_kind": "tool-call", "tool_call_id": c, "tool_name": "t"} for c in call_ids]
    return rec(version, "ModelResponseReceived", step=1, message={"parts": parts})


def started(version: int, call_id: str) -> EventRecord:
    return rec(version, "ToolCallStarted", tool_call_id=call_id, tool_name="t", args={})


def finished(version: int, call_id: str, result: Any = 1) -> EventRecord:
    return rec(version, "ToolCallFinished", tool_call_id=call_id, tool_name="t", result=result)


def test_timestamps_ids_of_the_execution_durations_and_cost_do_not_count() -> None:
    a = rec(
        2,
        "ModelRequestSent",
        step=1,
        message={
            "parts": [{"timestamp": "x", "content": "hi"}],
            "run_id": "r1",
            "conversation_id": "c1",
        },
    )
    b = rec(
        2,
        "ModelRequestSent",
        step=1,
        message={
            "parts": [{"timestamp": "y", "content": "hi"}],
            "run_id": "r2",
            "conversation_id": "c2",
        },
    )
    assert comparable(a) == comparable(b)
    done_a = rec(3, "RunCompleted", output="x", duration_ms=5.0, cost_usd=0.1, requests=1)
    done_b = rec(3, "RunCompleted", output="x", duration_ms=9.0, cost_usd=0.2, requests=1)
    assert first_divergence([a, done_a], [b, done_b]) is None


def test_parallel_tool_results_in_another_order_are_not_a_divergence() -> None:
    recorded = [
        response(3, "p", "r"),
        started(4, "p"),
        started(5, "r"),
        finished(6, "r"),
        finished(7, "p"),
    ]
    replayed = [
        response(3, "p", "r"),
        started(4, "p"),
        started(5, "r"),
        finished(6, "p"),
        finished(7, "r"),
    ]
    assert first_divergence(recorded, replayed) is None
    assert [r.version for r in canonical_order(recorded)] == [3, 4, 7, 5, 6]


def test_a_divergence_is_reported_at_the_recorded_events_index() -> None:
    recorded = [
        response(3, "p", "r"),
        started(4, "p"),
        started(5, "r"),
        finished(6, "r", 2),
        finished(7, "p", 1),
    ]
    replayed = [
        response(3, "p", "r"),
        started(4, "p"),
        started(5, "r"),
        finished(6, "p", 1),
        finished(7, "r", 99),
    ]
    divergence = first_divergence(recorded, replayed)
    assert divergence is not None
    assert divergence.index == 6  # the recorded result of call r
    assert divergence.expected is not None and divergence.expected.data["result"] == 2
    assert divergence.actual is not None and divergence.actual.data["result"] == 99
    assert '-  "result": 2,' in divergence.diff and '+  "result": 99,' in divergence.diff


def test_a_replay_that_stops_short_or_goes_on_diverges_at_the_end() -> None:
    recorded = [rec(1, "RunRequested", prompt="p"), rec(2, "RunCompleted", output="x")]
    short = first_divergence(recorded, recorded[:1])
    assert short is not None and short.index == 2 and short.actual is None
    longer = first_divergence(recorded, [*recorded, rec(3, "RunFailed", error_kind="x")])
    assert longer is not None and longer.index == 3 and longer.expected is None
    assert longer.summary() == "diverged at event 3: expected end of recording, got RunFailed"


def test_a_divergence_between_events_of_one_type_names_the_fields_that_differ() -> None:
    recorded = [started(1, "c1"), finished(2, "c1", result=42.0)]
    replayed = [started(1, "c1"), finished(2, "c1", result=43.0)]
    divergence = first_divergence(recorded, replayed)
    assert divergence is not None
    assert divergence.differing_fields() == ("result",)
    assert divergence.summary() == "diverged at event 2: ToolCallFinished differs in result"

    nested_a = rec(1, "ModelRequestSent", step=1, message={"parts": [{"content": "a"}, {"x": 1}]})
    nested_b = rec(1, "ModelRequestSent", step=1, message={"parts": [{"content": "b"}, {"x": 1}]})
    nested = first_divergence([nested_a], [nested_b])
    assert nested is not None
    assert nested.summary() == (
        "diverged at event 1: ModelRequestSent differs in message.parts[0].content"
    )


def test_a_divergence_between_different_event_types_names_both() -> None:
    divergence = first_divergence([finished(1, "c1")], [started(1, "c1")])
    assert divergence is not None
    assert divergence.differing_fields() == ()
    assert divergence.summary() == (
        "diverged at event 1: expected ToolCallFinished, got ToolCallStarted"
    )


def test_fields_a_newer_pydantic_ai_adds_to_messages_are_not_a_divergence() -> None:
    # Recorded by pydantic-ai 2.62; replayed by 2.68, whose ModelResponse JSON has
    # `canonical_system` and `model_id` too (found running the suite on 2.68).
    old = rec(3, "ModelResponseReceived", step=1, message={"parts": [], "model_name": "m"})
    new = rec(
        3,
        "ModelResponseReceived",
        step=1,
        message={"parts": [], "model_name": "m", "canonical_system": None, "model_id": "x:m"},
    )
    assert first_divergence([old], [new]) is None
    changed = rec(3, "ModelResponseReceived", step=1, message={"parts": [], "model_name": "n"})
    divergence = first_divergence([old], [changed])
    assert divergence is not None
    assert divergence.differing_fields() == ("message.model_name",)
