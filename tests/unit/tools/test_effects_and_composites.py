"""Side-effecting tools after a crash (retry, fail, pause and a person's resolution), their
idempotency keys, and composite tools whose sub-calls are recorded and served on resume.

A crash is the state a killed worker leaves behind, written straight to the store
(the model's tool call recorded, the call started, no outcome); the real SIGKILL runs
are in tests/integration/test_tool_crashes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import RequestUsage

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.domain.tools.policies import MiddlewareSpec
from agentledger.handlers.catalog import Catalog, CatalogEntry
from agentledger.handlers.recording import messages_to_json
from agentledger.handlers.replay import replay_run
from agentledger.handlers.runner import AgentRunner
from agentledger.handlers.tools import composite, idempotency_key, side_effect, sub_call
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings

pytestmark = pytest.mark.asyncio

effects: list[tuple[str, Any]] = []


def _model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Calls the tool named by the prompt's first word with {"x": <second word>}, then
    answers with what it returned."""
    last = messages[-1]
    assert isinstance(last, ModelRequest)
    for part in last.parts:
        if isinstance(part, ToolReturnPart):
            return ModelResponse(parts=[TextPart(f"done: {part.content}")])
    tool, arg = str(last.parts[-1].content).split()  # type: ignore[union-attr]
    return ModelResponse(parts=[ToolCallPart(tool, {"x": arg}, tool_call_id="call-1")])


async def refund(x: str) -> str:
    """A side effect declared in the catalog, not by a decorator."""
    effects.append(("refund", x))
    return f"refunded {x}"


@side_effect(on_crash="fail")
async def charge(x: str) -> str:
    effects.append(("charge", idempotency_key()))
    return f"charged {x}"


@side_effect(on_crash="retry")
async def notify(x: str) -> str:
    effects.append(("notify", idempotency_key()))
    return f"notified {x}"


@side_effect(on_crash="pause")
async def transfer(x: str) -> str:
    effects.append(("transfer", x))
    return f"transferred {x}"


async def forecast(x: str) -> str:
    effects.append(("forecast", x))
    return f"sunny in {x}"


def hotels(x: str) -> list[str]:
    effects.append(("hotels", x))
    return [f"{x} Inn", f"{x} Grand"]


async def shout(text: str) -> str:
    effects.append(("shout", text))
    return text.upper()


async def both(x: str) -> dict[str, Any]:
    """A hand-written composite: two recorded sub-calls at once."""
    weather, rooms = await asyncio.gather(sub_call(forecast, x=x), sub_call(hotels, x=x))
    return {"weather": weather, "rooms": rooms}


TOOLS = FunctionToolset(
    [
        refund,
        charge,
        notify,
        transfer,
        both,
        composite(forecast, hotels, mode="parallel", name="trip"),
        composite(forecast, shout, name="loud_forecast"),
    ]
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncEventStore]:
    effects.clear()
    yield AsyncEventStore(EventStore(Settings(data_dir=tmp_path, postgres_dsn=None)), threads=2)


def _catalog() -> Catalog:
    entry = CatalogEntry(
        name="ops",
        ref="inline:agent",
        middleware=MiddlewareSpec.model_validate({"tools": {"refund": {"side_effect": "fail"}}}),
        _agent=Agent(FunctionModel(_model), name="ops", toolsets=[TOOLS]),
    )
    return Catalog(path=Path("inline"), entries={"ops": entry})


async def _run(store: AsyncEventStore, task_id: str, prompt: str = "") -> Any:
    task = RunAgent(task_id=task_id, agent="ops", prompt=prompt or "charge 5")
    return await AgentRunner(store=store, catalog=_catalog()).run(task, final_attempt=True)


def _crashed_during(store: AsyncEventStore, task_id: str, tool: str, extra: Any = ()) -> None:
    """What a worker killed while `tool` ran leaves behind: the call started, no outcome."""
    run = AgentRun(
        task_id=task_id,
        agent="ops",
        prompt=f"{tool} 5",
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    request = ModelRequest.user_text_prompt(f"{tool} 5")
    response = ModelResponse(
        parts=[ToolCallPart(tool, {"x": "5"}, tool_call_id="call-1")],
        model_name="function",
        usage=RequestUsage(input_tokens=10, output_tokens=2),
    )
    req_json, resp_json = messages_to_json([request, response])
    run.send_model_request(req_json)
    run.receive_model_response(resp_json, "function", 10, 2)
    run.start_tool_call("call-1", tool, {"x": "5"})
    for sub_id, sub_name, result in extra:
        run.start_tool_call(sub_id, sub_name, {"x": "5"})
        run.finish_tool_call(sub_id, sub_name, result)
    store.sync.save(run)


def _events(store: AsyncEventStore, task_id: str) -> list[Any]:
    return store.sync.events(run_id_for(task_id))


def _names(store: AsyncEventStore, task_id: str) -> list[str]:
    return [type(e).__name__ for e in _events(store, task_id)]


async def test_a_side_effecting_start_is_saved_before_the_tool_runs(
    store: AsyncEventStore,
) -> None:
    seen: list[list[str]] = []

    @side_effect()
    async def probe(x: str) -> str:
        seen.append(_names(store, "t-probe"))
        return "ok"

    entry = CatalogEntry(
        name="ops",
        ref="inline:agent",
        _agent=Agent(FunctionModel(_model), name="ops", toolsets=[FunctionToolset([probe])]),
    )
    catalog = Catalog(path=Path("inline"), entries={"ops": entry})
    task = RunAgent(task_id="t-probe", agent="ops", prompt="probe 1")
    assert (await AgentRunner(store=store, catalog=catalog).run(task)).status == "completed"
    assert seen and seen[0][-1] == "ToolCallStarted", "the start was not saved before the call"


@pytest.mark.parametrize("tool", ["charge", "refund"], ids=["decorator", "catalog"])
async def test_under_fail_an_unfinished_side_effect_never_runs_again(
    store: AsyncEventStore, tool: str
) -> None:
    _crashed_during(store, "t-fail", tool)
    outcome = await _run(store, "t-fail")
    assert outcome.status == "failed" and outcome.error.kind == "tool_error"
    assert "whether its effect happened is unknown" in outcome.error.message
    assert effects == []
    decision = next(e for e in _events(store, "t-fail") if type(e).__name__ == "ToolDecisionMade")
    assert decision.decision == "unknown_after_crash" and decision.detail == {"on_crash": "fail"}
    assert (await _run(store, "t-fail")).status == "failed" and effects == []  # redelivered
    report = await replay_run(store.sync, run_id_for("t-fail"), _catalog())
    assert report.verdict == "identical", report.divergence


async def test_under_retry_it_runs_again_with_the_same_idempotency_key(
    store: AsyncEventStore,
) -> None:
    first = await _run(store, "t-once", "notify 1")
    _crashed_during(store, "t-retry", "notify")
    outcome = await _run(store, "t-retry")
    assert first.status == outcome.status == "completed"
    (once_key, retry_key) = [key for _, key in effects]
    assert once_key.startswith("al-") and once_key != retry_key  # per run and call
    # The key is the run's and the call's: a second execution of the call gets it again.
    effects.clear()
    _crashed_during(store, "t-retry-2", "notify")
    await _run(store, "t-retry-2")
    assert effects[0][1] != retry_key
    names = _names(store, "t-retry")
    assert names.count("ToolCallStarted") == 1 and "ToolDecisionMade" in names
    report = await replay_run(store.sync, run_id_for("t-retry"), _catalog())
    assert report.verdict == "identical", report.divergence


async def test_idempotency_key_is_stable_for_one_call() -> None:
    from agentledger.handlers.recording import _SCOPE, ToolCallScope

    class _Run:
        id = "r-1"
        task_id = "t"

    class _Recorder:
        run = _Run()

    token = _SCOPE.set(ToolCallScope("call-1", "notify", _Recorder()))  # type: ignore[arg-type]
    try:
        assert idempotency_key() == idempotency_key()
        assert idempotency_key("a") != idempotency_key("b")
    finally:
        _SCOPE.reset(token)
    with pytest.raises(RuntimeError, match="inside a tool call"):
        idempotency_key()


@pytest.mark.parametrize(
    ("resolution", "value", "status", "output"),
    [
        ("result", "transferred by hand", "completed", "done: transferred by hand"),
        ("retry", None, "completed", "done: transferred 5"),
        ("fail", "the bank says no", "failed", None),
    ],
)
async def test_under_pause_the_run_waits_for_a_persons_resolution(
    store: AsyncEventStore, resolution: str, value: Any, status: str, output: Any
) -> None:
    _crashed_during(store, "t-pause", "transfer")
    paused = await _run(store, "t-pause")
    assert paused.status == "paused" and paused.paused_for is not None
    assert paused.paused_for.tool_name == "transfer" and paused.paused_for.tool_call_id == "call-1"
    assert (await _run(store, "t-pause")).status == "paused"  # redelivered: still waiting
    assert effects == []
    run = store.sync.get(run_id_for("t-pause"), AgentRun)
    assert run is not None
    run.resolve_tool_call(resolution, value, "alice")
    store.sync.save(run)
    outcome = await _run(store, "t-pause")
    assert outcome.status == status
    if status == "completed":
        assert outcome.output == output
    else:
        assert outcome.error.message == "the bank says no"
    assert effects == ([("transfer", "5")] if resolution == "retry" else [])
    names = _names(store, "t-pause")
    assert names.count("ToolDecisionMade") == 1  # unknown_after_crash, once
    assert names.index("RunPaused") < names.index("ToolCallResolved")
    report = await replay_run(store.sync, run_id_for("t-pause"), _catalog())
    assert report.verdict == "identical", report.divergence


async def test_a_paused_run_can_be_cancelled(store: AsyncEventStore) -> None:
    _crashed_during(store, "t-cancel", "transfer")
    await _run(store, "t-cancel")
    runner = AgentRunner(store=store, catalog=_catalog())
    task = RunAgent(task_id="t-cancel", agent="ops", prompt="transfer 5")
    outcome = await runner.cancel(task, "workflow cancelled")
    assert outcome.status == "failed" and outcome.error.kind == "cancelled"


@pytest.mark.parametrize(
    ("prompt", "output", "ran"),
    [
        (
            "trip Oslo",
            "done: {'forecast': 'sunny in Oslo', 'hotels': ['Oslo Inn', 'Oslo Grand']}",
            [("forecast", "Oslo"), ("hotels", "Oslo")],
        ),
        (
            "loud_forecast Rome",
            "done: SUNNY IN ROME",
            [("forecast", "Rome"), ("shout", "sunny in Rome")],
        ),
        (
            "both Lima",
            "done: {'weather': 'sunny in Lima', 'rooms': ['Lima Inn', 'Lima Grand']}",
            [("forecast", "Lima"), ("hotels", "Lima")],
        ),
    ],
    ids=["parallel", "sequence", "hand-written"],
)
async def test_a_composite_records_each_sub_call_and_replays_identically(
    store: AsyncEventStore, prompt: str, output: str, ran: list[tuple[str, str]]
) -> None:
    outcome = await _run(store, "t-comp", prompt)
    assert outcome.status == "completed" and outcome.output == output
    assert sorted(effects) == sorted(ran)
    tool = prompt.split()[0]
    subs = [
        (e.tool_call_id, e.tool_name)
        for e in _events(store, "t-comp")
        if isinstance(e, AgentRun.ToolCallFinished) and "#" in e.tool_call_id
    ]
    assert sorted(subs) == [
        ("call-1#1", f"{tool}.{ran[0][0]}"),
        ("call-1#2", f"{tool}.{ran[1][0]}"),
    ]
    effects.clear()
    report = await replay_run(store.sync, run_id_for("t-comp"), _catalog())
    assert report.verdict == "identical", report.divergence
    assert effects == [], "replay ran a sub-tool"


async def test_after_a_crash_a_composite_runs_only_its_unfinished_sub_calls(
    store: AsyncEventStore,
) -> None:
    _crashed_during(
        store, "t-comp-crash", "loud_forecast", [("call-1#1", "loud_forecast.forecast", "cloudy")]
    )
    outcome = await _run(store, "t-comp-crash")
    assert outcome.output == "done: CLOUDY"  # the recorded first step, served
    assert effects == [("shout", "cloudy")]
    names = _names(store, "t-comp-crash")
    assert names.count("ToolCallStarted") == 3  # the call and its two sub-calls, once each
