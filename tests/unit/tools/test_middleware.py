"""Tool middleware inside recorded runs (SQLite event store, in-process tool state): what
each policy does to the call, what it records, and that replay serves the record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.domain.tools.policies import MiddlewareSpec
from agentledger.handlers.catalog import Catalog, CatalogEntry
from agentledger.handlers.replay import replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.handlers.tools import (
    ToolTimedOut,
    reset_circuit_breakers,
    use_tool_state,
    with_middleware,
)
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.tools.state import MemoryToolState

pytestmark = pytest.mark.asyncio

executions: list[dict[str, Any]] = []
failures_left: dict[str, int] = {}


def _model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Asks for `fetch(city=<prompt>)` once, then answers with what came back."""
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    for part in last.parts:
        # A tool's `ModelRetry` reaches the model as a retry prompt (or, in pydantic-ai
        # 2.62+, a tool return whose outcome is `retried`).
        retried = isinstance(part, RetryPromptPart) or getattr(part, "outcome", "") == "retried"
        if retried:
            return ModelResponse(parts=[TextPart(f"without it: {part.content}")])
        if isinstance(part, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"got {part.content}")])
    prompt = str(last.parts[-1].content)  # type: ignore[union-attr]
    return ModelResponse(parts=[ToolCallPart("fetch", {"city": prompt}, tool_call_id="c1")])


async def fetch(city: str, api_key: str = "k-123") -> str:
    """A flaky, slow remote lookup (its behaviour is set per test)."""
    executions.append({"city": city})
    left = failures_left.get(city, 0)
    if left > 0:
        failures_left[city] = left - 1
        raise ConnectionError(f"{city}: connection reset")
    if city.startswith("slow"):
        await asyncio.sleep(0.3 if len(executions) == 1 else 0)
    return f"weather in {city}"


def _agent() -> Agent[None, str]:
    return Agent(FunctionModel(_model), name="weather", toolsets=[FunctionToolset([fetch])])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncEventStore]:
    executions.clear()
    failures_left.clear()
    reset_circuit_breakers()
    use_tool_state(MemoryToolState())
    yield AsyncEventStore(EventStore(Settings(data_dir=tmp_path, postgres_dsn=None)), threads=2)
    use_tool_state(None)


def _catalog(**policies: Any) -> Catalog:
    entry = CatalogEntry(
        name="weather",
        ref="inline:agent",
        middleware=MiddlewareSpec.model_validate(policies),
        _agent=_agent(),
    )
    return Catalog(path=Path("inline"), entries={"weather": entry})


async def _run(store: AsyncEventStore, catalog: Catalog, task_id: str, city: str) -> Any:
    task = RunAgent(task_id=task_id, agent="weather", prompt=city)
    return await AgentRunner(store=store, catalog=catalog).run(task, final_attempt=True)


def _names(store: AsyncEventStore, task_id: str) -> list[str]:
    return [type(e).__name__ for e in store.sync.events(run_id_for(task_id))]


def _decisions(store: AsyncEventStore, task_id: str) -> list[AgentRun.ToolDecisionMade]:
    return [
        e
        for e in store.sync.events(run_id_for(task_id))
        if isinstance(e, AgentRun.ToolDecisionMade)
    ]


async def test_a_retry_is_recorded_between_start_and_result_and_replays_identically(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(retry={"attempts": 3, "on": ["ConnectionError"], "backoff_s": 0})
    failures_left["Oslo"] = 2
    outcome = await _run(store, catalog, "t-retry", "Oslo")
    assert outcome.status == "completed" and outcome.output == "got weather in Oslo"
    assert len(executions) == 3
    names = _names(store, "t-retry")
    start, end = names.index("ToolCallStarted"), names.index("ToolCallFinished")
    assert names[start + 1 : end] == ["ToolDecisionMade", "ToolDecisionMade"]
    details = [(d.decision, d.detail["attempt"]) for d in _decisions(store, "t-retry")]
    assert details == [("retried", 1), ("retried", 2)]
    assert "connection reset" in _decisions(store, "t-retry")[0].detail["error"]
    executions.clear()
    report = await replay_run(store.sync, run_id_for("t-retry"), catalog)
    assert report.verdict == "identical", report.divergence
    assert executions == [], "replay ran the tool"


async def test_retries_run_out_and_the_run_fails_with_the_last_error(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(retry={"attempts": 2, "on": ["ConnectionError"], "backoff_s": 0})
    failures_left["Rome"] = 5
    outcome = await _run(store, catalog, "t-out", "Rome")
    assert outcome.status == "failed" and outcome.error.kind == "tool_error"
    assert "ConnectionError: Rome: connection reset" in outcome.error.message
    assert len(executions) == 2 and len(_decisions(store, "t-out")) == 1


async def test_a_timeout_is_recorded_retried_and_replays_identically(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(timeout_s=0.05, retry={"attempts": 2, "on": [ToolTimedOut], "backoff_s": 0})
    outcome = await _run(store, catalog, "t-slow", "slow town")
    assert outcome.status == "completed", outcome
    decisions = _decisions(store, "t-slow")
    assert [d.decision for d in decisions] == ["timed_out", "retried"]
    assert decisions[0].detail == {"timeout_s": 0.05} and decisions[0].waited_ms >= 40
    assert "timed out after 0.05 s" in decisions[1].detail["error"]
    report = await replay_run(store.sync, run_id_for("t-slow"), catalog)
    assert report.verdict == "identical", report.divergence


async def test_a_timeout_without_retry_fails_the_run(store: AsyncEventStore) -> None:
    outcome = await _run(store, _catalog(timeout_s=0.05), "t-to", "slow lane")
    assert outcome.status == "failed" and outcome.error.kind == "tool_error"
    assert "timed out after 0.05 s" in outcome.error.message


async def test_a_cache_hit_skips_the_tool_and_replay_does_not_need_the_cache(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(cache={"ttl_s": 60})
    first = await _run(store, catalog, "t-c1", "Lima")
    second = await _run(store, catalog, "t-c2", "Lima")
    other = await _run(store, catalog, "t-c3", "Quito")
    assert first.output == second.output == "got weather in Lima"
    assert other.output == "got weather in Quito"
    assert executions == [{"city": "Lima"}, {"city": "Quito"}]
    assert [d.decision for d in _decisions(store, "t-c2")] == ["cache_hit"]
    assert _decisions(store, "t-c1") == []
    use_tool_state(MemoryToolState())  # the cache is gone: replay serves the record
    report = await replay_run(store.sync, run_id_for("t-c2"), catalog)
    assert report.verdict == "identical", report.divergence
    assert len(executions) == 2


async def test_a_cache_entry_expires(store: AsyncEventStore) -> None:
    now = [1000.0]
    use_tool_state(MemoryToolState(clock=lambda: now[0]))
    catalog = _catalog(cache={"ttl_s": 10})
    await _run(store, catalog, "t-e1", "Kyiv")
    now[0] += 11
    await _run(store, catalog, "t-e2", "Kyiv")
    assert len(executions) == 2 and _decisions(store, "t-e2") == []


async def test_a_rejecting_rate_limit_tells_the_model_and_records_it(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(rate_limit={"calls": 1, "per_s": 60, "on_limit": "reject"})
    assert (await _run(store, catalog, "t-r1", "Bern")).output == "got weather in Bern"
    second = await _run(store, catalog, "t-r2", "Bern")
    assert second.status == "completed"
    assert second.output.startswith("without it: tool 'fetch' is rate limited (1/60s)")
    assert len(executions) == 1
    (decision,) = _decisions(store, "t-r2")
    assert decision.decision == "rate_limited" and decision.detail["action"] == "refused"
    report = await replay_run(store.sync, run_id_for("t-r2"), catalog)
    assert report.verdict == "identical", report.divergence


async def test_a_waiting_rate_limit_holds_the_call_and_records_the_wait(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(rate_limit="1/200ms")
    await _run(store, catalog, "t-w1", "Riga")
    await _run(store, catalog, "t-w2", "Riga")
    (decision,) = _decisions(store, "t-w2")
    assert decision.detail["action"] == "waited" and decision.waited_ms > 50
    assert len(executions) == 2


async def test_a_rate_limit_per_session_keeps_sessions_apart(store: AsyncEventStore) -> None:
    catalog = _catalog(rate_limit={"calls": 1, "per_s": 60, "key": "session", "on_limit": "reject"})
    runner = AgentRunner(store=store, catalog=catalog)
    for task_id, session in (("s1", "alice"), ("s2", "bob"), ("s3", "alice")):
        task = RunAgent(task_id=task_id, agent="weather", prompt="Oslo", session_id=session)
        await runner.run(task, final_attempt=True)
    assert len(executions) == 2
    assert [d.decision for d in _decisions(store, "s3")] == ["rate_limited"]


async def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_good_trial(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(circuit_breaker={"failures": 2, "reset_s": 0.2, "ask_model": False})
    failures_left["Paris"] = 2
    for task_id in ("b1", "b2"):
        assert (await _run(store, catalog, task_id, "Paris")).error.kind == "tool_error"
    refused = await _run(store, catalog, "b3", "Paris")
    assert refused.status == "failed" and "is unavailable" in refused.error.message
    assert len(executions) == 2, "an open circuit ran the tool"
    assert [d.decision for d in _decisions(store, "b3")] == ["circuit_open"]
    await asyncio.sleep(0.25)
    assert (await _run(store, catalog, "b4", "Paris")).status == "completed"
    assert (await _run(store, catalog, "b5", "Paris")).status == "completed"
    assert len(executions) == 4


async def test_the_log_carries_run_context_and_redacts_arguments(
    store: AsyncEventStore,
) -> None:
    catalog = _catalog(log={"patterns": [r"\d{4}-\d{4}"], "result": True})
    with structlog.testing.capture_logs() as logs:
        await _run(store, catalog, "t-log", "card 1234-5678 city")
    started = next(line for line in logs if line["event"] == "tool call started")
    # by name (`api_key` holds "key") and by pattern
    assert started["args"] == {"city": "card [redacted] city", "api_key": "[redacted]"}
    assert started["task_id"] == "t-log" and started["agent"] == "weather"
    assert started["run_id"] == str(run_id_for("t-log")) and started["tool"] == "fetch"
    finished = next(line for line in logs if line["event"] == "tool call finished")
    assert finished["result"] == "weather in card [redacted] city"
    assert finished["duration_ms"] >= 0


async def test_the_python_api_wraps_a_toolset_outside_the_catalog(store: AsyncEventStore) -> None:
    agent = Agent(
        FunctionModel(_model),
        toolsets=[with_middleware(FunctionToolset([fetch]), cache={"ttl_s": 60})],
    )
    assert (await agent.run("Oslo")).output == "got weather in Oslo"
    assert (await agent.run("Oslo")).output == "got weather in Oslo"
    assert len(executions) == 1
    with pytest.raises(TypeError, match="not both"):
        with_middleware(FunctionToolset([fetch]), MiddlewareSpec(), timeout_s=1)
