"""The write path end to end: tasks published to real NATS, runs recorded in a real store.

Every behavioural test runs on PostgreSQL and on SQLite (the `backend` fixture).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import nats
import pytest

from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.client import submit
from agentledger.handlers.worker import REPLY_HEADER
from agentledger.infra.settings import Settings
from support.agents import FLAKY_FAILURES_ENV, JOURNAL_ENV, write_catalog
from support.harness import nats_client, rejection_events, run_events, running_worker

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(backend, catalog=str(write_catalog(tmp_path)), ack_wait_s=5)


async def _outcome(nc: nats.NATS, prefix: str, task_id: str, timeout: float = 20) -> RunOutcome:
    sub = await nc.subscribe(f"{prefix}.results.{task_id}", max_msgs=1)
    msg = await sub.next_msg(timeout=timeout)
    return RunOutcome.model_validate_json(msg.data)


async def test_plain_nats_client_task_produces_outcome_and_events(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings):
        # A client that knows only the contract: raw nats-py, JSON, the Nats-Msg-Id header.
        nc = await nats.connect(settings.nats_url)
        try:
            sub = await nc.subscribe(f"{prefix}.results.plain-1", max_msgs=1)
            payload = {"task_id": "plain-1", "agent": "calculator", "prompt": "add 2 and 40"}
            ack = await nc.jetstream().publish(
                f"{prefix}.tasks.run.calculator",
                json.dumps(payload).encode(),
                headers={"Nats-Msg-Id": "plain-1"},
            )
            assert ack.stream == settings.tasks_stream
            outcome = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
        finally:
            await nc.drain()
    assert outcome.status == "completed"
    assert outcome.output == "The result is 42.0."
    assert outcome.usage.requests == 2 and outcome.usage.tool_calls == 1
    assert outcome.cost_usd is not None and outcome.cost_usd > 0
    assert run_events(settings, "plain-1") == [
        "RunRequested",
        "ModelRequestSent",
        "ModelResponseReceived",
        "ToolCallStarted",
        "ToolCallFinished",
        "ModelRequestSent",
        "ModelResponseReceived",
        "RunCompleted",
    ]


async def test_same_task_id_published_three_times_runs_once(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        task = RunAgent(task_id="dup-1", agent="calculator", prompt="multiply 6 and 7")
        outcomes = [await submit(nc, prefix, task, timeout=20) for _ in range(3)]
    assert {o.status for o in outcomes if o} == {"completed"}
    assert len({o.model_dump_json() for o in outcomes if o}) == 1
    counts = Counter(run_events(settings, "dup-1"))
    assert counts["RunRequested"] == 1
    assert counts["ModelResponseReceived"] == 2
    assert counts["ToolCallFinished"] == 1
    assert counts["RunCompleted"] == 1


async def test_redelivery_of_completed_task_republishes_stored_outcome(
    settings: Settings,
) -> None:
    # A different message id defeats JetStream's duplicate window, so the worker really
    # receives the task twice: the second time it must answer from the store.
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        body = RunAgent(task_id="again-1", agent="calculator", prompt="add 1 and 1")
        first = await submit(nc, prefix, body, timeout=20)
        sub = await nc.subscribe(f"{prefix}.results.again-1", max_msgs=1)
        await nc.jetstream().publish(
            f"{prefix}.tasks.run.calculator",
            body.model_dump_json().encode(),
            headers={"Nats-Msg-Id": "again-1-resent"},
        )
        second = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
    assert first == second
    assert Counter(run_events(settings, "again-1"))["RunRequested"] == 1


async def test_outcome_goes_to_reply_subject_header(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        task = RunAgent(task_id="reply-1", agent="greeter", prompt="hi")
        await nc.jetstream().publish(
            f"{prefix}.tasks.run.calculator".replace("calculator", "echo"),
            task.model_copy(update={"agent": "echo"}).model_dump_json().encode(),
            headers={"Nats-Msg-Id": "reply-1", REPLY_HEADER: inbox},
        )
        outcome = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
    assert outcome.task_id == "reply-1" and outcome.status == "completed"


async def test_concurrent_turns_on_one_session_are_all_kept(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        tasks = [
            RunAgent(task_id=f"turn-{i}", agent="echo", prompt=f"message {i}", session_id="busy")
            for i in range(50)
        ]
        outcomes = await asyncio.gather(*(submit(nc, prefix, t, timeout=60) for t in tasks))
    assert all(o is not None and o.status == "completed" for o in outcomes)
    from agentledger.domain.conversation import Conversation
    from agentledger.domain.ids import session_aggregate_id_for
    from agentledger.infra.event_store import EventStore

    store = EventStore(settings)
    try:
        events = store.events(session_aggregate_id_for("busy"))
    finally:
        store.close()
    turns = [e for e in events if isinstance(e, Conversation.TurnRecorded)]
    assert sorted(e.turn for e in turns) == list(range(1, 51))
    assert sorted(e.task_id for e in turns) == sorted(t.task_id for t in tasks)


async def test_next_task_of_a_session_sees_the_previous_turn(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        for i, prompt in enumerate(["remember the code is 1234", "what do you remember?"]):
            task = RunAgent(task_id=f"mem-{i}", agent="notes", prompt=prompt, session_id="mem")
            outcome = await submit(nc, prefix, task, timeout=20)
    assert outcome is not None
    assert outcome.output == "You told me: the code is 1234."


@pytest.mark.parametrize(
    ("body", "subject_agent", "kind", "needle"),
    [
        (b"{not json", "calculator", "invalid_json", "not valid JSON"),
        (
            json.dumps({"task_id": "bad-types", "agent": "calculator", "prompt": 42}).encode(),
            "calculator",
            "invalid_payload",
            "prompt: Input should be a valid string",
        ),
        (
            json.dumps({"task_id": "bad-agent", "agent": "nope", "prompt": "hi"}).encode(),
            "nope",
            "unknown_agent",
            "unknown agent 'nope'",
        ),
        (
            json.dumps(
                {"task_id": "too-big", "agent": "calculator", "prompt": "x" * 40_000}
            ).encode(),
            "calculator",
            "prompt_too_large",
            "the limit is 32768",
        ),
        (
            json.dumps({"task_id": "mismatch", "agent": "greeter", "prompt": "hi"}).encode(),
            "calculator",
            "invalid_payload",
            "subject names agent 'calculator'",
        ),
    ],
    ids=["invalid-json", "wrong-types", "unknown-agent", "oversized-prompt", "subject-mismatch"],
)
async def test_poison_input_is_rejected_recorded_and_worker_keeps_serving(
    settings: Settings, body: bytes, subject_agent: str, kind: str, needle: str
) -> None:
    prefix = settings.subject_prefix
    msg_id = f"poison-{uuid.uuid4().hex[:8]}"
    try:
        task_id = json.loads(body)["task_id"]
    except ValueError:
        task_id = None
    async with running_worker(settings), nats_client(settings) as nc:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        await nc.jetstream().publish(
            f"{prefix}.tasks.run.{subject_agent}",
            body,
            headers={"Nats-Msg-Id": msg_id, REPLY_HEADER: inbox},
        )
        rejected = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
        # ...and the worker is still serving valid tasks.
        ok = await submit(
            nc, prefix, RunAgent(task_id=f"ok-{msg_id}", agent="echo", prompt="still there?")
        )
    assert rejected.status == "rejected"
    assert rejected.error is not None and rejected.error.kind == kind
    assert needle in rejected.error.message
    assert rejected.task_id == task_id
    recorded = rejection_events(settings, task_id or msg_id)
    assert [type(e).__name__ for e in recorded] == ["TaskRejected"]
    assert recorded[0].error_kind == kind and needle in recorded[0].reason
    assert ok is not None and ok.status == "completed"


async def test_tool_failure_is_a_recorded_failed_run(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await submit(
            nc, prefix, RunAgent(task_id="boom-1", agent="exploding", prompt="go"), timeout=20
        )
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "tool_error"
    assert "the tool broke" in outcome.error.message
    assert run_events(settings, "boom-1")[-2:] == ["ToolCallFailed", "RunFailed"]


async def test_usage_limit_fails_the_run_clearly(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        task = RunAgent.model_validate(
            {
                "task_id": "limited-1",
                "agent": "calculator",
                "prompt": "add 1 and 2",
                "usage_limits": {"request_limit": 1},
            }
        )
        outcome = await submit(nc, prefix, task, timeout=20)
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "usage_limit_exceeded"
    assert run_events(settings, "limited-1")[-1] == "RunFailed"


async def test_transient_model_failure_is_retried_with_backoff(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "journal.log"))
    monkeypatch.setenv(FLAKY_FAILURES_ENV, "2")
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await submit(
            nc,
            settings.subject_prefix,
            RunAgent(task_id="flaky-1", agent="flaky", prompt="p"),
            timeout=30,
        )
    assert outcome is not None and outcome.status == "completed"
    assert outcome.output == "worked after 2 failures"
    counts = Counter(run_events(settings, "flaky-1"))
    assert counts["RunRequested"] == 1 and counts["RunFailed"] == 0 and counts["RunCompleted"] == 1


async def test_transient_failure_on_the_last_delivery_is_recorded_as_failed(
    make_settings,
    backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    settings = make_settings(backend, catalog=str(write_catalog(tmp_path)), max_deliveries=2)
    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "journal.log"))
    monkeypatch.setenv(FLAKY_FAILURES_ENV, "5")
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await submit(
            nc,
            settings.subject_prefix,
            RunAgent(task_id="flaky-2", agent="flaky", prompt="q"),
            timeout=30,
        )
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "transient_exhausted"
    assert outcome.error.retryable and "502 bad gateway" in outcome.error.message
    assert run_events(settings, "flaky-2")[-1] == "RunFailed"


async def test_a_task_that_keeps_failing_unexpectedly_still_gets_an_outcome(
    make_settings,
    backend,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # The agent's model function has a bug (a plain exception, not a provider error).
    # It is retried like any unexpected error; on the last delivery it is recorded and
    # answered instead of being left without an outcome. (A catalog reference that does
    # not import is no longer a per-task error: the worker refuses to start.)
    settings = make_settings(backend, catalog=str(write_catalog(tmp_path)), max_deliveries=2)
    async with running_worker(settings), nats_client(settings) as nc:
        outcome = await submit(
            nc,
            settings.subject_prefix,
            RunAgent(task_id="broken-1", agent="unexpected", prompt="x"),
            timeout=30,
        )
    # The run exists, so the run itself ends: failed, with a stable error kind.
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error is not None and outcome.error.kind == "internal_error"
    assert "LookupError: a bug in the model function" in outcome.error.message
    assert run_events(settings, "broken-1")[-1] == "RunFailed"
    assert rejection_events(settings, "broken-1") == []
