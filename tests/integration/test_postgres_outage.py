"""PostgreSQL stopped and restarted while tasks are in flight: no task is lost and none
is run twice (the worker naks with backoff while the database is down)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from support.agents import JOURNAL_ENV, MODEL_PAUSE_ENV, read_journal, write_catalog
from support.harness import nats_client, run_events, running_worker, settings_env, wait_for
from support.postgres_server import EmbeddedPostgres

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_tasks_survive_a_postgres_restart(
    own_postgres: EmbeddedPostgres,
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal = tmp_path / "journal.log"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    monkeypatch.setenv(MODEL_PAUSE_ENV, "0.3")  # keep runs in flight across the outage
    dsn = own_postgres.create_database("outage")
    settings: Settings = make_settings(
        "postgres", postgres_dsn=dsn, catalog=str(write_catalog(tmp_path)), ack_wait_s=5
    )
    tasks = [RunAgent(task_id=f"out-{i}", agent="effect", prompt=f"job-{i}") for i in range(20)]
    async with running_worker(settings), nats_client(settings) as nc:
        pending = [
            asyncio.create_task(submit(nc, settings.subject_prefix, t, timeout=120)) for t in tasks
        ]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(3)
        await asyncio.to_thread(own_postgres.start)
        outcomes = await asyncio.gather(*pending)

    assert [o.status if o else None for o in outcomes] == ["completed"] * len(tasks)
    for task in tasks:
        counts = Counter(run_events(settings, task.task_id))
        assert counts["RunRequested"] == 1, task.task_id
        assert counts["ModelResponseReceived"] == 2, (task.task_id, counts)
        assert counts["RunCompleted"] == 1, task.task_id
    effects = Counter(line for line in read_journal(journal) if line.startswith("tool-effect"))
    # Saves are retried with the same events while the database is down, so even the
    # tools' side effects happened once each.
    assert effects == Counter({f"tool-effect job-{i}": 1 for i in range(len(tasks))})


async def test_a_worker_started_while_postgres_is_down_waits_for_it(
    own_postgres: EmbeddedPostgres,
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Before: the worker exited at once. Now it retries with backoff and comes up with
    # the database (what a container restart policy or a systemd unit expects).
    dsn = own_postgres.create_database("late")
    settings: Settings = make_settings("postgres", postgres_dsn=dsn)
    await asyncio.to_thread(own_postgres.stop)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
            [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", "worker"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await asyncio.to_thread(
            wait_for,
            lambda: b"event store unreachable; retrying" in log.read_bytes(),
            60,
            "a retry",
        )
        assert worker.poll() is None, log.read_text()
        await asyncio.to_thread(own_postgres.start)
        await asyncio.to_thread(
            wait_for, lambda: b"worker started" in log.read_bytes(), 60, "the worker to start"
        )
        async with nats_client(settings) as nc:
            task = RunAgent(task_id="late-1", agent="calculator", prompt="add 2 and 40")
            outcome = await submit(nc, settings.subject_prefix, task, timeout=60)
        assert outcome is not None and outcome.status == "completed"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
