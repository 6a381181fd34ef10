"""A worker process killed with SIGKILL mid-run: the task is redelivered to a new worker
process, the run resumes from its recorded steps, and nothing recorded happens twice."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from support.agents import (
    JOURNAL_ENV,
    SECOND_CALL_PAUSE_ENV,
    TOOL_PAUSE_ENV,
    read_journal,
    write_catalog,
)
from support.harness import nats_client, run_events, settings_env, start_worker_process, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    # A short AckWait so the killed worker's message comes back within seconds.
    return make_settings(backend, catalog=str(write_catalog(tmp_path)), ack_wait_s=2)


def _kill(process) -> None:  # type: ignore[no-untyped-def]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.mark.parametrize(
    ("kill_after", "pause_env"),
    [
        # Killed while the tool runs: the model's tool-call response is recorded, the
        # tool result is not.
        ("ModelResponseReceived", TOOL_PAUSE_ENV),
        # Killed after the tool result is recorded, while the second model call runs.
        ("ToolCallFinished", SECOND_CALL_PAUSE_ENV),
    ],
    ids=["between-response-and-tool-result", "after-tool-result"],
)
async def test_sigkilled_worker_resumes_without_repeating_recorded_steps(
    settings: Settings, tmp_path: Path, kill_after: str, pause_env: str
) -> None:
    journal = tmp_path / "journal.log"
    env = settings_env(settings)
    env[JOURNAL_ENV] = str(journal)
    first_env = {**env, pause_env: "30"}  # a long pause: the kill lands inside it
    task = RunAgent(task_id="crash-1", agent="effect", prompt="job-1")

    first = start_worker_process(first_env, tmp_path / "worker-1.log")
    try:
        async with nats_client(settings) as nc:
            publishing = asyncio.create_task(submit(nc, settings.subject_prefix, task, timeout=90))
            await asyncio.to_thread(
                wait_for,
                lambda: kill_after in run_events(settings, task.task_id),
                60,
                f"{kill_after} to be recorded",
            )
            _kill(first)
            events_at_kill = run_events(settings, task.task_id)
            second = start_worker_process(env, tmp_path / "worker-2.log")
            try:
                outcome = await publishing
            finally:
                second.terminate()
                second.wait(timeout=30)
    finally:
        if first.poll() is None:
            _kill(first)

    assert "RunCompleted" not in events_at_kill
    assert outcome is not None and outcome.status == "completed", (
        tmp_path / "worker-2.log"
    ).read_text()
    assert outcome.output == "effect done: applied job-1"
    counts = Counter(run_events(settings, task.task_id))
    assert counts["RunRequested"] == 1
    assert counts["ModelResponseReceived"] == 2, "a recorded model step was recorded twice"
    assert counts["ToolCallFinished"] == 1
    assert counts["RunCompleted"] == 1
    lines = Counter(line.split(" ")[0] for line in read_journal(journal))
    assert lines["model-call-1"] == 1, "the recorded first model response was requested again"
    assert lines["tool-effect"] == 1, "the tool's effect happened twice"
    if kill_after == "ToolCallFinished":
        assert lines["tool-start"] == 1, "a recorded tool call was executed again"
