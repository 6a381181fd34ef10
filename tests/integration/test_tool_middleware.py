"""Tool middleware on real NATS and both stores (issue 12): a rate limit held across two
worker processes, a cache that outlives its worker, and retries and timeouts recorded
and replayed as `identical`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.bootstrap import load_catalog
from agentledger.handlers.client import submit
from agentledger.handlers.replay import replay_run
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.tools.state import cache_bucket
from support.agents import JOURNAL_ENV, read_journal
from support.harness import (
    nats_client,
    record_tasks,
    settings_env,
    start_worker_process,
    stored_outcome,
)

CATALOG = """
[agents.tools]
ref = "support.agents:tools_agent"

[agents.tools.middleware]
{middleware}
"""


def _settings(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, middleware: str, **kw: object
) -> Settings:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG.format(middleware=middleware))
    return make_settings(backend, catalog=str(catalog), **kw)


def _effects(journal: Path) -> list[tuple[str, float, str]]:
    """(label, time, pid) of every real execution of the tool."""
    found = []
    for line in read_journal(journal):
        if line.startswith("tool-effect "):
            _, label, at, pid = line.split(" ")
            found.append((label, float(at), pid))
    return found


def _decisions(settings: Settings, task_id: str) -> list[AgentRun.ToolDecisionMade]:
    store = EventStore(settings)
    try:
        return [
            e for e in store.events(run_id_for(task_id)) if isinstance(e, AgentRun.ToolDecisionMade)
        ]
    finally:
        store.close()


@pytest.mark.slow
def test_a_rate_limit_holds_across_two_worker_processes(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings = _settings(make_settings, backend, tmp_path, 'rate_limit = "3/s"')
    journal = tmp_path / "journal.log"
    env = settings_env(settings) | {JOURNAL_ENV: str(journal)}
    log = tmp_path / "workers.log"
    workers = [start_worker_process(env, log) for _ in range(2)]
    tasks = [RunAgent(task_id=f"rl-{i}", agent="tools", prompt=f"call-{i}") for i in range(15)]

    async def publish_and_wait() -> list[object]:
        async with nats_client(settings) as nc:
            for task in tasks:
                await submit(nc, settings.subject_prefix, task, wait=False)
            return [await stored_outcome(nc, settings, t.task_id, 90) for t in tasks]

    try:
        outcomes = asyncio.run(publish_and_wait())
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
    assert all(o["status"] == "completed" for o in outcomes), outcomes  # type: ignore[index]
    starts = sorted(at for _, at, _ in _effects(journal))
    assert len(starts) == 15
    # Both processes ran tools, and the shared limit spaced them: 15 starts at 3 per
    # second take at least 4 s (the first 3 go at once).
    assert len({pid for _, _, pid in _effects(journal)}) == 2, "one worker ran every task"
    assert starts[-1] - starts[0] >= 4 - 0.05
    # No window holds more than 3 starts. A start is stamped on the limiter just
    # before the tool runs; the 0.2 s margin covers that gap on a loaded machine.
    for i, t in enumerate(starts):
        assert len([u for u in starts[i:] if u < t + 0.8]) <= 3, starts


def test_a_cached_result_survives_a_worker_restart(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(make_settings, backend, tmp_path, "cache = { ttl_s = 300 }")
    journal = tmp_path / "journal.log"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))

    async def scenario() -> None:
        first = RunAgent(task_id="cache-1", agent="tools", prompt="Oslo")
        again = RunAgent(task_id="cache-2", agent="tools", prompt="Oslo")
        other = RunAgent(task_id="cache-3", agent="tools", prompt="Lima")
        outcomes = await record_tasks(settings, [first])  # a worker, stopped after
        outcomes |= await record_tasks(settings, [again, other])  # a new worker
        async with nats_client(settings) as nc:
            kv = await nc.jetstream().key_value(cache_bucket(settings.subject_prefix))
            assert len(await kv.keys()) == 2
        assert {o.output for o in outcomes.values()} == {
            "effect done: applied Oslo",
            "effect done: applied Lima",
        }

    asyncio.run(scenario())
    assert [label for label, _, _ in _effects(journal)] == ["Oslo", "Lima"]
    assert [d.decision for d in _decisions(settings, "cache-2")] == ["cache_hit"]
    assert _decisions(settings, "cache-1") == _decisions(settings, "cache-3") == []


def test_retries_and_timeouts_are_recorded_and_replay_identically(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    middleware = (
        "timeout_s = 0.3\n"
        'retry = { attempts = 3, on = ["ConnectionError", "TimeoutError"], backoff_s = 0.01 }'
    )
    settings = _settings(make_settings, backend, tmp_path, middleware)
    journal = tmp_path / "journal.log"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    tasks = [
        RunAgent(task_id="mw-flaky", agent="tools", prompt="flaky-1"),
        RunAgent(task_id="mw-slow", agent="tools", prompt="slow-1"),
    ]

    async def scenario() -> dict[str, object]:
        return dict(await record_tasks(settings, tasks))

    outcomes = asyncio.run(scenario())
    assert {t: o.status for t, o in outcomes.items()} == {  # type: ignore[attr-defined]
        "mw-flaky": "completed",
        "mw-slow": "completed",
    }
    flaky = _decisions(settings, "mw-flaky")
    assert [(d.decision, d.detail["attempt"]) for d in flaky] == [("retried", 1)]
    assert "ConnectionError: flaky-1: connection reset" in flaky[0].detail["error"]
    slow = _decisions(settings, "mw-slow")
    assert [d.decision for d in slow] == ["timed_out", "retried"]
    assert slow[0].detail == {"timeout_s": 0.3}
    assert [label for label, _, _ in _effects(journal)].count("slow-1") == 2

    catalog = load_catalog(settings)
    store = EventStore(settings)
    try:
        for task in tasks:
            report = asyncio.run(replay_run(store, run_id_for(task.task_id), catalog))
            assert report.verdict == "identical", (task.task_id, report.divergence)
    finally:
        store.close()
    assert len(_effects(journal)) == 4, "replay ran a tool"
