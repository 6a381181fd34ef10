"""Tool patterns under real crashes (issue 12): a worker process SIGKILLed while a
composite tool or a side-effecting tool runs, and another worker taking the run over.

- A composite's finished sub-calls are served from the record: only the one that was
  running runs again.
- A side-effecting tool under `fail` never runs twice: the run fails with the effect
  recorded as unknown.
- Under `pause` the run waits; `agentledger tool resolve --result` lets it finish.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import nats
import pytest
from conftest import Backend, MakeSettings
from test_graph_crash import wait_for_outcome

from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.domain.subjects import task_subject
from agentledger.infra.event_store import EventStore
from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings
from support.agents import JOURNAL_ENV, TOOL_PAUSE_ENV, read_journal
from support.harness import cli, settings_env, start_worker_process, wait_for

pytestmark = pytest.mark.slow

CATALOG = """
[agents.three_steps]
ref = "support.agents:three_steps"
[agents.pay_fail]
ref = "support.agents:pay_fail"
[agents.pay_pause]
ref = "support.agents:pay_pause"
"""


def _publish(settings: Settings, agent: str, task_id: str, prompt: str) -> None:
    async def go() -> None:
        nc = await nats.connect(**nats_connect_kwargs(settings, "test-client"))
        try:
            await nc.jetstream().publish(
                task_subject(settings.subject_prefix, agent),
                json.dumps({"task_id": task_id, "agent": agent, "prompt": prompt}).encode(),
                headers={"Nats-Msg-Id": task_id},
            )
        finally:
            await nc.drain()

    asyncio.run(go())


def _kill_during(
    make_settings: MakeSettings,
    backend: Backend,
    tmp_path: Path,
    agent: str,
    task_id: str,
    kill_at: str,
) -> tuple[Settings, dict[str, str], Path, Path, subprocess.Popen[bytes]]:
    """Start a worker, publish the task, SIGKILL the worker once the journal has
    `kill_at`, start another worker; returns it (running) and what the test needs."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    journal = tmp_path / "journal.log"
    settings = make_settings(backend, catalog=str(catalog), ack_wait_s=2, lease_ttl_s=2)
    log = tmp_path / "workers.log"
    env = settings_env(settings) | {JOURNAL_ENV: str(journal), TOOL_PAUSE_ENV: "30"}
    doomed = start_worker_process(env, log)
    try:
        _publish(settings, agent, task_id, "order-7")
        wait_for(lambda: kill_at in read_journal(journal), 60, kill_at)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    # The run is taken over by a worker whose tool answers at once.
    survivor = start_worker_process(env | {TOOL_PAUSE_ENV: "0"}, log)
    return settings, env, journal, log, survivor


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def test_a_composites_finished_sub_calls_are_served_after_a_sigkill(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings, _, journal, log, survivor = _kill_during(
        make_settings,
        backend,
        tmp_path,
        "three_steps",
        "comp-kill",
        "sub-start second order-7>first",
    )
    try:
        outcome = wait_for_outcome(settings, "comp-kill", 90)
    finally:
        _stop(survivor)
    assert outcome["status"] == "completed", (outcome, log.read_text()[-3000:])
    assert outcome["output"] == "done: order-7>first>second>third"
    counted = Counter(read_journal(journal))
    assert counted["sub-effect first order-7"] == 1, counted  # served from the record
    # It was running: it runs again. (Each step gets the one before's result.)
    assert counted["sub-start second order-7>first"] == 2, counted
    assert counted["sub-effect second order-7>first"] == 1, counted
    assert counted["sub-effect third order-7>first>second"] == 1, counted
    store = EventStore(settings)
    try:
        finished = [
            e.tool_call_id
            for e in store.events(run_id_for("comp-kill"))
            if isinstance(e, AgentRun.ToolCallFinished)
        ]
    finally:
        store.close()
    assert len(finished) == len(set(finished)) == 4  # three sub-calls and the composite


def test_a_side_effect_under_fail_never_runs_twice_after_a_sigkill(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings, _, journal, log, survivor = _kill_during(
        make_settings, backend, tmp_path, "pay_fail", "pay-kill", "pay-start order-7"
    )
    try:
        outcome = wait_for_outcome(settings, "pay-kill", 90)
    finally:
        _stop(survivor)
    assert outcome["status"] == "failed", (outcome, log.read_text()[-3000:])
    error = outcome["error"]
    assert isinstance(error, dict) and error["kind"] == "tool_error"
    assert "whether its effect happened is unknown" in error["message"]
    assert read_journal(journal).count("pay-start order-7") == 1
    assert "pay-effect order-7" not in read_journal(journal)


def test_a_side_effect_under_pause_waits_for_tool_resolve(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    settings, env, journal, log, survivor = _kill_during(
        make_settings, backend, tmp_path, "pay_pause", "pay-pause", "pay-start order-7"
    )
    try:
        paused = wait_for_outcome(settings, "pay-pause", 90)
        assert paused["status"] == "paused", (paused, log.read_text()[-3000:])
        assert paused["paused_for"]["tool_name"] == "pay"  # type: ignore[index]
        shown = cli("events", "pay-pause", "--json", env=env)
        names = [e["name"] for e in json.loads(shown.stdout)]
        assert names[-2:] == ["ToolDecisionMade", "RunPaused"], shown.stderr
        resolved = cli(
            "tool", "resolve", "pay-pause", "--result", "paid by phone", "--by", "alice", env=env
        )
        assert resolved.returncode == 0, resolved.stderr
        wait_for(
            lambda: wait_for_outcome(settings, "pay-pause", 30)["status"] != "paused", 60, "resume"
        )
        outcome = wait_for_outcome(settings, "pay-pause", 30)
    finally:
        _stop(survivor)
    assert outcome["status"] == "completed" and outcome["output"] == "done: paid by phone"
    assert read_journal(journal).count("pay-start order-7") == 1  # never ran again
    again = cli("tool", "resolve", "pay-pause", "--retry", env=env)
    assert again.returncode != 0 and "is completed, not paused" in again.stderr
