"""A graph run whose process is SIGKILLed mid-step resumes where it stopped: the steps
that had finished do not run again (counted in a journal file across processes), on
PostgreSQL and on SQLite.

Each case runs twice: driven by `GraphRunner` in a process of its own, and by real
`agentledger worker` processes over NATS (the task published as a plain client does;
the killed worker's message comes back after AckWait to a new worker)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nats
import pytest
from conftest import Backend, MakeSettings

from agentledger.domain.subjects import graph_task_subject
from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings
from support.agents import JOURNAL_ENV, TOOL_PAUSE_ENV, read_journal
from support.crash_graphs import PAUSE_STEP_ENV
from support.harness import settings_env, start_worker_process, wait_for

pytestmark = pytest.mark.slow

CATALOG = """
[graphs.five]
ref = "support.crash_graphs:five_steps"

[graphs.forked]
ref = "support.crash_graphs:forked"

[graphs.agentic]
ref = "support.crash_graphs:agentic"

[agents.effect]
ref = "support.agents:effect"
"""


def start(env: dict[str, str], graph: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "support.graph_process", f"{graph}-task", graph, '"in"'],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def publish(settings: Settings, graph: str) -> None:
    """Publish the graph task as a plain NATS client does."""

    async def go() -> None:
        nc = await nats.connect(**nats_connect_kwargs(settings, "test-client"))
        try:
            body = json.dumps({"task_id": f"{graph}-task", "graph": graph, "inputs": "in"})
            await nc.jetstream().publish(
                graph_task_subject(settings.subject_prefix, graph),
                body.encode(),
                headers={"Nats-Msg-Id": f"{graph}-task"},
            )
        finally:
            await nc.drain()

    asyncio.run(go())


def stored_outcome(settings: Settings, task_id: str) -> dict[str, object] | None:
    async def go() -> dict[str, object] | None:
        nc = await nats.connect(**nats_connect_kwargs(settings, "test-client"))
        prefix = settings.subject_prefix
        try:
            msg = await nc.jetstream().get_last_msg(
                f"{prefix.upper()}_RESULTS", f"{prefix}.results.{task_id}"
            )
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.drain()
        outcome: dict[str, object] = json.loads(msg.data)
        return outcome

    return asyncio.run(go())


def wait_for_outcome(settings: Settings, task_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = stored_outcome(settings, task_id)
        if outcome is not None:
            return outcome
        time.sleep(0.5)
    raise AssertionError(f"no outcome for {task_id} within {timeout}s")


def crash_then_finish(
    make_settings: MakeSettings,
    backend: Backend,
    tmp_path: Path,
    driver: str,
    graph: str,
    pause_at: str,
    finished_first: tuple[str, ...] = (),
    kill_when: str | None = None,
    first_env: dict[str, str] | None = None,
) -> tuple[dict[str, object], Counter[str]]:
    """Kill the first process while it is inside `pause_at` (and, for parallel steps,
    once `finished_first` have finished and had a moment to be checkpointed); or once
    the journal has the line `kill_when`, with `first_env` for the first process."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    journal = tmp_path / "journal.log"
    # A short AckWait: the killed worker's message comes back within seconds.
    settings = make_settings(backend, catalog=str(catalog), ack_wait_s=2)
    env = settings_env(settings) | {JOURNAL_ENV: str(journal)}
    log = tmp_path / "graph.log"
    extra = first_env if first_env is not None else {PAUSE_STEP_ENV: pause_at}
    if driver == "worker":
        first = start_worker_process(env | extra, log)
        publish(settings, graph)
    else:
        first = start(env | extra, graph, log)
    wanted = {f"step-start {pause_at}", *(f"step-done {s}" for s in finished_first)}
    if kill_when is not None:
        wanted = {kill_when}
    try:
        wait_for(
            lambda: wanted <= set(read_journal(journal)),
            60,
            f"the first process inside {pause_at}",
        )
        if finished_first:
            time.sleep(1.0)  # their checkpoints are saved right after the journal line
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    if driver == "worker":
        second = start_worker_process(env, log)
        try:
            outcome = wait_for_outcome(settings, f"{graph}-task", 120)
        finally:
            second.terminate()
            second.wait(30)
    else:
        second = start(env, graph, log)
        assert second.wait(120) == 0, log.read_text()
        outcome = json.loads(log.read_text().strip().splitlines()[-1])
    return outcome, Counter(read_journal(journal))


DRIVERS = pytest.mark.parametrize("driver", ["runner", "worker"])


@DRIVERS
def test_a_run_killed_in_step_3_of_5_resumes_at_step_3(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, driver: str
) -> None:
    outcome, journal = crash_then_finish(make_settings, backend, tmp_path, driver, "five", "step3")
    assert (outcome["status"], outcome["output"]) == (
        "completed",
        "in>step1>step2>step3>step4>step5",
    )
    assert journal == Counter(
        {
            "step-start step1": 1,
            "step-done step1": 1,
            "step-start step2": 1,
            "step-done step2": 1,
            "step-start step3": 2,  # killed inside it, then run again
            "step-done step3": 1,
            "step-start step4": 1,
            "step-done step4": 1,
            "step-start step5": 1,
            "step-done step5": 1,
        }
    )


@DRIVERS
def test_a_run_killed_inside_a_fork_reruns_only_the_unfinished_branch(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, driver: str
) -> None:
    outcome, journal = crash_then_finish(
        make_settings,
        backend,
        tmp_path,
        driver,
        "forked",
        "slow",
        finished_first=("fast1", "fast2"),
    )
    assert outcome["status"] == "completed"
    # The join got every branch's result exactly once.
    assert outcome["output"] == ["in>split>fast1", "in>split>fast2", "in>split>slow"]
    assert journal["step-start split"] == 1
    assert journal["step-start fast1"] == journal["step-start fast2"] == 1
    assert journal["step-start slow"] == 2 and journal["step-done slow"] == 1
    assert journal["step-start after"] == 1


@DRIVERS
def test_a_run_killed_inside_an_agent_step_resumes_that_agent_run(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path, driver: str
) -> None:
    """Killed while the agent step's tool runs: its first model response is recorded,
    the tool's result is not. The new process serves the model response, runs the tool
    (unrecorded: at least once) and asks the model only for what is missing."""
    outcome, journal = crash_then_finish(
        make_settings,
        backend,
        tmp_path,
        driver,
        "agentic",
        "ask",
        kill_when="tool-start job-1",
        first_env={TOOL_PAUSE_ENV: "60"},
    )
    assert (outcome["status"], outcome["output"]) == (
        "completed",
        "in>before>effect done: applied job-1>last",
    )
    assert journal["step-start before"] == 1  # the finished step is served
    assert journal["step-start ask"] == 2 and journal["step-done ask"] == 1
    assert journal["model-call-1 job-1"] == 1, "the recorded model response was asked again"
    assert journal["tool-start job-1"] == 2 and journal["tool-effect job-1"] == 1
    assert journal["model-call-2 job-1"] == 1 and journal["step-start last"] == 1
