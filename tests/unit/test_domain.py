"""The domain model: run and conversation aggregates, their events, ids and maths."""

from __future__ import annotations

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, resolve_topic

from agentledger.domain.conversation import Conversation, conversation_messages
from agentledger.domain.errors import InvalidTransition
from agentledger.domain.ids import run_id_for, session_aggregate_id_for
from agentledger.domain.pricing import ModelPrice
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun, RunHistory
from agentledger.domain.stats import HistogramBucket, bucket_of, histogram_percentile, percentile
from agentledger.domain.timeline import event_record


def _run(task_id: str = "t-1") -> AgentRun:
    return AgentRun(
        task_id=task_id,
        agent="calc",
        prompt="add 1 and 2",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )


def test_run_id_is_derived_from_task_id() -> None:
    assert _run("abc").id == run_id_for("abc") == _run("abc").id
    assert run_id_for("abc") != run_id_for("abd")
    assert run_id_for("abc") != session_aggregate_id_for("abc")


def test_run_records_steps_and_sums_usage() -> None:
    run = _run()
    run.send_model_request({"kind": "request", "parts": []})
    run.receive_model_response({"kind": "response", "parts": []}, "m", 10, 3)
    run.start_tool_call("call-1", "add", {"a": 1})
    run.finish_tool_call("call-1", "add", 3)
    run.send_model_request({"kind": "request", "parts": []})
    run.receive_model_response({"kind": "response", "parts": []}, "m", 20, 5)
    run.complete("3", cost_usd=0.5, duration_ms=12.0)
    assert (run.status, run.requests, run.input_tokens, run.output_tokens) == (
        "completed",
        2,
        30,
        8,
    )
    assert run.tool_calls == 1 and run.steps == 2
    events = run.collect_events()
    completed = events[-1]
    assert isinstance(completed, AgentRun.RunCompleted)
    assert (completed.requests, completed.input_tokens, completed.tool_calls) == (2, 30, 1)
    history = RunHistory.fold(events)
    assert len(history.messages) == 4
    assert history.tool_results == {"call-1": 3}


def test_finished_run_refuses_more_events() -> None:
    run = _run()
    run.fail("model_error", "boom", retryable=False, duration_ms=1.0)
    with pytest.raises(InvalidTransition, match="already failed"):
        run.complete("x", None, 1.0)
    with pytest.raises(InvalidTransition):
        run.send_model_request({})


def test_conversation_history_up_to_a_version() -> None:
    conversation = Conversation(session_id="s")
    conversation.record_turn("r1", "t1", "a", [{"m": 1}, {"m": 2}])
    conversation.record_turn("r2", "t2", "a", [{"m": 3}])
    events = conversation.collect_events()
    assert conversation.turns == 2 and conversation.version == 3
    assert conversation_messages(events) == [{"m": 1}, {"m": 2}, {"m": 3}]
    assert conversation_messages(events, up_to_version=2) == [{"m": 1}, {"m": 2}]
    assert conversation.id == session_aggregate_id_for("s")


def _event_classes() -> list[type]:
    found = []
    for aggregate in (AgentRun, Conversation, TaskRejection):
        for value in vars(aggregate).values():
            if isinstance(value, type) and issubclass(value, Aggregate.Event):
                found.append(value)
    return found


def test_every_event_has_its_own_stable_topic() -> None:
    classes = _event_classes()
    topics = [get_topic(cls) for cls in classes]
    assert len(set(topics)) == len(topics), "two event classes share a stored topic"
    # Stored topics name the aggregate and event, not the module path, so moving a
    # class to another module never orphans stored events.
    assert topics == [f"agentledger.{cls.__qualname__}" for cls in classes]
    assert resolve_topic("agentledger.AgentRun.ToolCallFinished").__name__ == "ToolCallFinished"


def test_event_record_is_plain_data() -> None:
    record = event_record(_run("t-9").collect_events()[0])
    assert record.aggregate_type == "AgentRun" and record.name == "RunRequested"
    assert record.version == 1 and record.data["task_id"] == "t-9"
    assert isinstance(record.aggregate_id, str) and record.timestamp.endswith("+00:00")


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def _histogram(values: list[float]) -> list[HistogramBucket]:
    by_bucket: dict[int, list[float]] = {}
    for value in values:
        by_bucket.setdefault(bucket_of(value), []).append(value)
    return [
        HistogramBucket(count=len(vs), low=min(vs), high=max(vs))
        for _, vs in sorted(by_bucket.items())
    ]


def test_histogram_percentiles_are_exact_for_lone_values_and_close_otherwise() -> None:
    assert histogram_percentile([], 50) is None
    assert histogram_percentile(_histogram([7.0]), 99) == 7.0
    spread = [0.0, 1.0, 10.0, 100.0, 1000.0]  # one value per bucket: exact
    for q in (0, 50, 95, 99, 100):
        assert histogram_percentile(_histogram(spread), q) == percentile(spread, q)
    crowded = [100.0 + i / 10 for i in range(40)]  # all in one bucket or two
    for q in (50, 95, 99):
        exact = percentile(crowded, q)
        assert exact is not None
        assert histogram_percentile(_histogram(crowded), q) == pytest.approx(exact, rel=0.044)
    assert bucket_of(0.0) < bucket_of(1e-3) < bucket_of(1.0) < bucket_of(1.05) < bucket_of(1e9)
    with pytest.raises(ValueError, match="finite"):
        bucket_of(float("nan"))
    with pytest.raises(ValueError, match=r"0\.\.100"):
        histogram_percentile(_histogram([1.0]), -1)


def test_price_turns_tokens_into_dollars() -> None:
    price = ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    assert price.cost(input_tokens=1_000_000, output_tokens=500_000) == pytest.approx(2.0)
