"""The README's client snippets, run as users run them (twice), and the typed client."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import MakeSettings

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import (
    LedgerClient,
    OutcomeTimeout,
    QueryFailed,
    QueryUnavailable,
    WaitingFor,
)
from agentledger.infra.nats_server import EmbeddedNats
from agentledger.infra.settings import Settings
from support.harness import REPO_ROOT, running_projector, running_worker


def _readme_block(after: str) -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(after)
    match = re.search(r"```python\n(.*?)```", readme[start:], flags=re.S)
    assert match is not None
    return match.group(1)


async def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
async def ledger_prefix_services(
    tmp_path: Path, make_settings: MakeSettings
) -> AsyncIterator[Settings]:
    """A worker and a projector on the README's default prefix `ledger`, on a NATS server
    of this test's own (so the prefix cannot meet another test's)."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await asyncio.to_thread(server.start)
    settings = make_settings("sqlite", nats_url=server.url, subject_prefix="ledger")
    try:
        async with running_worker(settings), running_projector(settings):
            yield settings
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.slow
async def test_the_readme_nats_snippet_survives_being_run_twice(
    ledger_prefix_services: Settings,
) -> None:
    assert ledger_prefix_services.nats_url is not None
    code = _readme_block("## Publishing a task from any NATS client").replace(
        "nats://127.0.0.1:4222", ledger_prefix_services.nats_url
    )
    outputs = []
    for _ in range(2):
        result = await _run_script(code)
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout.strip().removeprefix("b'").removesuffix("'")))
    first, second = outputs
    assert first["status"] == "completed" and first["output"] == "The result is 42.0."
    assert second == first  # the stored outcome of the one run
    assert first["session_id"] is None  # "optional" is not a real session


@pytest.mark.slow
async def test_the_readme_client_snippet_runs_twice(ledger_prefix_services: Settings) -> None:
    assert ledger_prefix_services.nats_url is not None
    code = _readme_block("### The Python client").replace(
        "nats://127.0.0.1:4222", ledger_prefix_services.nats_url
    )
    first = await _run_script(code)
    assert first.returncode == 0, first.stderr
    assert "completed The result is 42.0." in first.stdout
    assert "submitted before" not in first.stdout
    second = await _run_script(code)
    assert second.returncode == 0, second.stderr
    assert "task-43 was submitted before; this is its outcome" in second.stdout
    assert "completed The result is 42.0." in second.stdout


def test_the_client_imports_neither_faststream_nor_pydantic_ai() -> None:
    probe = (
        "import sys, agentledger.handlers.client;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('faststream', 'pydantic_ai', 'eventsourcing', 'psycopg')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_submit_wait_outcome_and_query(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite")
    assert settings.nats_url is not None
    async with running_worker(settings), running_projector(settings) as projector:
        ledger = await LedgerClient.connect(settings.nats_url, prefix=settings.subject_prefix)
        async with ledger:
            task = RunAgent(task_id="c-1", agent="calculator", prompt="add 2 and 40")
            assert await ledger.outcome("c-1") is None
            submission, outcome = await ledger.run(task, timeout=30)
            assert not submission.duplicate and submission.sequence >= 1
            assert outcome.status == "completed" and outcome.output == "The result is 42.0."

            again = await ledger.submit(task.model_copy(update={"prompt": "multiply 2 and 3"}))
            assert again.duplicate and again.sequence == submission.sequence
            assert await ledger.wait("c-1", timeout=5) == outcome
            assert await ledger.outcome("c-1") == outcome

            assert projector.store is not None
            last = await asyncio.to_thread(projector.store.max_notification_id)
            await asyncio.to_thread(projector.wait_until, last, 15.0)
            runs = await ledger.query("runs", agent="calculator")
            assert [r["task_id"] for r in runs] == ["c-1"]
            with pytest.raises(QueryFailed, match="unknown view"):
                await ledger.query("bogus")


async def test_waiting_reports_no_worker_then_times_out(make_settings: MakeSettings) -> None:
    settings = make_settings("sqlite")
    assert settings.nats_url is not None
    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.infra.nats import ensure_streams

    nc = await connect_nats(settings, "test")
    await ensure_streams(nc.jetstream(), settings)
    ledger = LedgerClient(nc, prefix=settings.subject_prefix)
    heard: list[WaitingFor] = []
    try:
        task = RunAgent(task_id="alone", agent="calculator", prompt="add 1 and 1")
        with pytest.raises(OutcomeTimeout, match="no outcome for task alone within 3s"):
            await ledger.run(task, timeout=3, on_waiting=heard.append, notice_after=1)
        with pytest.raises(QueryUnavailable, match="start `agentledger project`"):
            await ledger.query("runs")
    finally:
        await nc.drain()
    assert len(heard) == 1
    assert heard[0].workers_listening is False and heard[0].task_id == "alone"
    assert heard[0].subject == f"{settings.subject_prefix}.results.alone"
