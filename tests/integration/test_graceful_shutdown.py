"""SIGTERM drains a worker: in-flight runs finish within the grace period, or are released
at its end so another worker takes them at once (not after AckWait)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from support.agents import MODEL_PAUSE_ENV, write_catalog
from support.harness import nats_client, run_events, settings_env, start_worker_process, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def settings(make_settings, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    # A long AckWait: a quick pickup by the second worker can only come from a release.
    return make_settings("sqlite", catalog=str(write_catalog(tmp_path)), ack_wait_s=60)


async def test_sigterm_lets_in_flight_runs_finish(settings: Settings, tmp_path: Path) -> None:
    env = {**settings_env(settings), MODEL_PAUSE_ENV: "1.5"}
    worker = start_worker_process(env, tmp_path / "worker.log")
    async with nats_client(settings) as nc:
        pending = asyncio.create_task(
            submit(
                nc, settings.subject_prefix, RunAgent(task_id="drain-1", agent="effect", prompt="p")
            )
        )
        await asyncio.to_thread(
            wait_for,
            lambda: "RunRequested" in run_events(settings, "drain-1"),
            20,
            "the run to start",
        )
        os.killpg(worker.pid, signal.SIGTERM)
        outcome = await pending
    assert worker.wait(timeout=30) == 0
    assert outcome is not None and outcome.status == "completed"
    log = (tmp_path / "worker.log").read_text()
    assert "draining in-flight runs" in log and "worker stopped" in log


async def test_runs_still_going_at_the_end_of_grace_are_released(
    settings: Settings, tmp_path: Path
) -> None:
    slow_env = {
        **settings_env(settings),
        MODEL_PAUSE_ENV: "60",
        "AGENTLEDGER_SHUTDOWN_GRACE_S": "0.5",
    }
    first = start_worker_process(slow_env, tmp_path / "worker-1.log")
    async with nats_client(settings) as nc:
        pending = asyncio.create_task(
            submit(
                nc,
                settings.subject_prefix,
                RunAgent(task_id="release-1", agent="effect", prompt="p"),
                timeout=40,
            )
        )
        await asyncio.to_thread(
            wait_for,
            lambda: "RunRequested" in run_events(settings, "release-1"),
            20,
            "the run to start",
        )
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        released_at = time.monotonic()
        second = start_worker_process(settings_env(settings), tmp_path / "worker-2.log")
        try:
            outcome = await pending
        finally:
            second.terminate()
            second.wait(timeout=30)
    assert outcome is not None and outcome.status == "completed"
    assert time.monotonic() - released_at < 30, "the run waited for AckWait instead of a release"
    assert Counter(run_events(settings, "release-1"))["RunRequested"] == 1
