"""A worker killed with SIGKILL in the middle of an evaluation: the evaluation is taken
up again by another worker, the cases scored before the kill are neither run nor scored
again, and the evaluation ends with every case scored once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentledger.domain.evaluation.evaluation import Evaluation, evaluation_id_for
from agentledger.domain.subjects import eval_subject
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from support.agents import CATALOG, JOURNAL_ENV, MODEL_PAUSE_ENV, read_journal
from support.harness import (
    nats_client,
    settings_env,
    start_worker_process,
    stored_outcome,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

CASES = 8


@pytest.fixture
def settings(make_settings: Any, backend: str, tmp_path: Path) -> Settings:
    lines = ["cases:"]
    for i in range(CASES):
        lines += [f"  - name: job-{i}", f"    inputs: job-{i}", "    evaluators:"]
        lines += ["      - Contains: {value: effect done}"]
    (tmp_path / "jobs.yaml").write_text("\n".join(lines) + "\n")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        CATALOG + '[datasets.jobs]\npath = "jobs.yaml"\nagent = "effect"\nconcurrency = 2\n'
    )
    # A short AckWait: the killed worker's evaluation comes back within seconds.
    settings: Settings = make_settings(backend, catalog=str(catalog), ack_wait_s=2)
    return settings


def _scored(settings: Settings, task_id: str) -> list[str]:
    store = EventStore(settings)
    try:
        return [
            e.result["case"]
            for e in store.events(evaluation_id_for(task_id))
            if isinstance(e, Evaluation.CaseScored)
        ]
    finally:
        store.close()


def _kill(process: Any) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def test_a_sigkilled_evaluation_resumes_without_rerunning_finished_cases(
    settings: Settings, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.log"
    env = {**settings_env(settings), JOURNAL_ENV: str(journal), MODEL_PAUSE_ENV: "0.4"}
    first = start_worker_process(env, tmp_path / "worker-1.log")
    second = None
    try:
        async with nats_client(settings) as nc:
            await nc.jetstream().publish(
                eval_subject(settings.subject_prefix, "jobs"),
                json.dumps({"task_id": "ev-crash", "dataset": "jobs"}).encode(),
                headers={"Nats-Msg-Id": "ev-crash"},
            )
            await asyncio.to_thread(
                wait_for, lambda: len(_scored(settings, "ev-crash")) >= 3, 60, "3 scored cases"
            )
            _kill(first)
            before = _scored(settings, "ev-crash")
            assert len(before) < CASES, "the evaluation ended before the kill"
            second = start_worker_process(env, tmp_path / "worker-2.log")
            outcome = await stored_outcome(nc, settings, "ev-crash", timeout=90)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                _kill(process)

    assert outcome["status"] == "completed", (tmp_path / "worker-2.log").read_text()
    assert (outcome["cases"], outcome["passed"]) == (CASES, CASES)
    after = _scored(settings, "ev-crash")
    assert Counter(after) == Counter(f"job-{i}" for i in range(CASES)), "a case scored twice"
    assert after[: len(before)] == before
    calls = Counter(
        line.split(" ", 1)[1] for line in read_journal(journal) if line.startswith("model-call-1")
    )
    # A case scored before the kill ran once; one in flight at the kill may have had its
    # model call repeated (the recorded steps are not).
    assert all(calls[case] == 1 for case in before), calls
    assert all(calls[f"job-{i}"] in (1, 2) for i in range(CASES)), calls
