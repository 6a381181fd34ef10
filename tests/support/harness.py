"""Running real workers (in-process or as subprocesses) against real servers in tests."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from agentledger.domain.ids import rejection_id_for, run_id_for
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.bootstrap import ProjectorService, WorkerService
from agentledger.handlers.client import submit
from agentledger.infra.event_store import EventStore
from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore
from agentledger.projections.views import ALL_PROJECTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[WorkerService]:
    service = await WorkerService(settings=settings).start()
    try:
        yield service
    finally:
        await service.stop(grace_s=2)


@asynccontextmanager
async def running_projector(settings: Settings, **kwargs: Any) -> AsyncIterator[ProjectorService]:
    service = await ProjectorService(settings=settings, **kwargs).start()
    try:
        yield service
    finally:
        await service.stop()


@asynccontextmanager
async def nats_client(settings: Settings) -> AsyncIterator[Client]:
    nc = await nats.connect(**nats_connect_kwargs(settings, "test-client"))
    try:
        yield nc
    finally:
        await nc.drain()


async def stored_outcome(nc: Client, settings: Settings, task_id: str, timeout: float = 60) -> Any:
    """The task's outcome as stored on its results subject (JSON), once there."""
    from nats.js.errors import NotFoundError

    from agentledger.domain.subjects import results_stream, results_subject

    prefix = settings.subject_prefix
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            msg = await nc.jetstream().get_last_msg(
                results_stream(prefix), results_subject(prefix, task_id)
            )
            return json.loads(msg.data)
        except NotFoundError:
            if loop.time() > deadline:
                raise TimeoutError(f"no outcome for {task_id} within {timeout} s") from None
            await asyncio.sleep(0.05)


def run_events(settings: Settings, task_id: str) -> list[str]:
    """Event class names of a task's run, read from the store."""
    store = EventStore(settings)
    try:
        return [type(e).__name__ for e in store.events(run_id_for(task_id))]
    finally:
        store.close()


def rejection_events(settings: Settings, key: str) -> list[Any]:
    store = EventStore(settings)
    try:
        return store.events(rejection_id_for(key))
    finally:
        store.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"AGENTLEDGER_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env.get("AGENTLEDGER_DATA_DIR", str(REPO_ROOT)),
    )


def start_worker_process(
    env: dict[str, str], log_path: Path, ready_timeout: float = 30
) -> subprocess.Popen[bytes]:
    """A `agentledger worker` subprocess, returned once it is consuming."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{log_path.read_text()}")
        return b"worker started" in log_path.read_bytes()[offset:]

    wait_for(ready, ready_timeout, "the worker to start")
    return process


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def table_contents(views: ViewStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table's rows, in a stable order."""
    contents: dict[str, list[tuple[Any, ...]]] = {}
    with views.read() as cursor:
        for projection in ALL_PROJECTIONS:
            for table in projection.tables:
                cursor.execute(f"SELECT * FROM {table}")
                contents[table] = sorted(cursor.fetchall(), key=repr)
    return contents


async def record_tasks(settings: Settings, tasks: list[RunAgent]) -> dict[str, RunOutcome]:
    """Publish the tasks to a real worker: a session's turns in order, the rest at once."""
    outcomes: dict[str, RunOutcome] = {}
    async with running_worker(settings), nats_client(settings) as nc:

        async def one(task: RunAgent) -> None:
            outcome = await submit(nc, settings.subject_prefix, task, timeout=30)
            assert outcome is not None
            outcomes[task.task_id] = outcome

        solo = [t for t in tasks if t.session_id is None]
        sessions: dict[str, list[RunAgent]] = {}
        for t in tasks:
            if t.session_id is not None:
                sessions.setdefault(t.session_id, []).append(t)

        async def in_order(turns: list[RunAgent]) -> None:
            for t in turns:
                await one(t)

        await asyncio.gather(*(one(t) for t in solo), *(in_order(ts) for ts in sessions.values()))
    return outcomes


def corrupt_stored_event(
    settings: Settings, notification_id: int, *, topic: str | None = None
) -> None:
    """Rewrite a stored event: a topic no class has, or state that is not JSON."""
    column, value = ("topic", topic) if topic is not None else ("state", b"\x00not json")
    if settings.postgres_dsn is not None:
        import psycopg

        with psycopg.connect(settings.postgres_dsn.get_secret_value()) as connection:
            connection.execute(
                f"UPDATE agentledger_events SET {column} = %s WHERE notification_id = %s",
                (value, notification_id),
            )
    else:
        with sqlite3.connect(settings.sqlite_file) as connection:
            connection.execute(
                f"UPDATE stored_events SET {column} = ? WHERE rowid = ?", (value, notification_id)
            )
