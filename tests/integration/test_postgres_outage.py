"""PostgreSQL stopped and restarted while tasks are in flight: no task is lost and none
is run twice (the worker naks with backoff while the database is down)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.infra.settings import Settings
from support.agents import JOURNAL_ENV, MODEL_PAUSE_ENV, read_journal, write_catalog
from support.harness import nats_client, run_events, running_worker
from support.postgres_server import EmbeddedPostgres

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    # A server of its own: stopping the session's server would disturb other tests.
    root = Path(tempfile.mkdtemp(prefix="agentledger-pg-outage-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


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
