"""Hostile task messages through a real worker: each is rejected once, recorded and
answered, never retried as an unexpected error (issue 7, item 6)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agentledger.domain.rejection import TaskRejection
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.client import submit
from agentledger.handlers.worker import REPLY_HEADER
from agentledger.infra.settings import Settings
from support.agents import write_catalog
from support.harness import nats_client, rejection_events, running_worker

pytestmark = pytest.mark.asyncio

GOOD = '"agent": "calculator", "prompt": "add 1 and 2"'

# (name, body, task id readable from it, error kind, words of the reason)
HOSTILE: list[tuple[str, bytes, bool, str, str]] = [
    ("deep", b"[" * 100_000, False, "invalid_payload", "hundreds of levels deep"),
    (
        "huge-int",
        (
            '{"task_id": "huge-int", '
            + GOOD
            + ', "usage_limits": {"request_limit": '
            + "9" * 5000
            + "}}"
        ).encode(),
        False,
        "invalid_payload",
        "integer literal too long",
    ),
    (
        "surrogate",
        ('{"task_id": "surrogate", ' + GOOD[:-1] + ' \\ud800"}').encode(),
        True,
        "invalid_payload",
        "prompt contains a lone surrogate",
    ),
    (
        "nul",
        ('{"task_id": "nul", ' + GOOD + ', "metadata": {"k": "a\\u0000b"}}').encode(),
        True,
        "invalid_payload",
        "metadata.k contains a NUL character",
    ),
    (
        "limit-string",
        (
            '{"task_id": "limit-string", ' + GOOD + ', "usage_limits": {"request_limit": "5"}}'
        ).encode(),
        True,
        "invalid_payload",
        "usage_limits.request_limit",
    ),
    (
        "past-deadline",
        ('{"task_id": "past-deadline", ' + GOOD + ', "deadline": "2020-01-01T00:00:00Z"}').encode(),
        True,
        "deadline_exceeded",
        "had already passed when the task arrived",
    ),
    ("raw-bytes", b"\x00\xff\xed\xa0\x80 {" + b"\x00" * 1000, False, "invalid_json", "UTF-8"),
]


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(backend, catalog=str(write_catalog(tmp_path)), ack_wait_s=5)


async def test_hostile_tasks_are_rejected_recorded_and_answered(settings: Settings) -> None:
    prefix = settings.subject_prefix
    tag = uuid.uuid4().hex[:8]
    outcomes: dict[str, RunOutcome] = {}
    async with running_worker(settings), nats_client(settings) as nc:
        js = nc.jetstream()
        for name, body, _, _, _ in HOSTILE:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, max_msgs=1)
            await js.publish(
                f"{prefix}.tasks.run.calculator",
                body,
                headers={"Nats-Msg-Id": f"{name}-{tag}", REPLY_HEADER: inbox},
            )
            outcomes[name] = RunOutcome.model_validate_json((await sub.next_msg(timeout=20)).data)
        ok = await submit(
            nc, prefix, RunAgent(task_id=f"ok-{tag}", agent="calculator", prompt="add 2 and 3")
        )
    assert ok is not None and ok.status == "completed"
    for name, _, readable, kind, words in HOSTILE:
        outcome = outcomes[name]
        assert outcome.status == "rejected", name
        assert outcome.error is not None and outcome.error.kind == kind, (name, outcome.error)
        assert words in outcome.error.message, (name, outcome.error.message)
        assert outcome.task_id == (name if readable else None)
        recorded = rejection_events(settings, name if readable else f"{name}-{tag}")
        assert [type(e).__name__ for e in recorded] == ["TaskRejected"], name
        event = recorded[0]
        assert isinstance(event, TaskRejection.TaskRejected)
        assert event.error_kind == kind and event.reason == outcome.error.message
        for text in (event.reason, event.payload_excerpt, event.subject, event.key):
            assert "\x00" not in text and len(text) <= 512
            text.encode("utf-8")
        json.dumps(event.__dict__, default=str)
