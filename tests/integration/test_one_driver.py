"""A run is driven by one worker at a time: with two workers, an AckWait shorter than
the runs and more tasks than free slots, no task is redelivered while a worker holds it,
so no model call is repeated and no tool runs twice.

(Before: the subscriber fetched a batch and parked what did not fit behind its
semaphore without heartbeats; a parked task passed AckWait, went to the other worker,
and both drove the same run.)"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections import Counter
from pathlib import Path

import pytest
from conftest import MakeSettings

from agentledger.domain.subjects import task_subject, workers_consumer
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import submit
from agentledger.handlers.task_consumer import worker_consumer
from agentledger.infra.nats import ensure_streams
from support.agents import (
    JOURNAL_ENV,
    MODEL_BLOCK_ENV,
    MODEL_PAUSE_ENV,
    read_journal,
    write_catalog,
)
from support.harness import (
    nats_client,
    run_events,
    running_worker,
    settings_env,
    start_worker_process,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_two_workers_with_a_short_ack_wait_repeat_no_model_call_or_tool_run(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.log"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    monkeypatch.setenv(MODEL_PAUSE_ENV, "3")  # each run outlives AckWait (1 s) threefold
    settings = make_settings(
        "sqlite", catalog=str(write_catalog(tmp_path)), ack_wait_s=1, worker_concurrency=2
    )
    tasks = [RunAgent(task_id=f"slow-{i}", agent="effect", prompt=f"job-{i}") for i in range(20)]
    async with running_worker(settings), running_worker(settings), nats_client(settings) as nc:
        outcomes = await asyncio.gather(
            *(submit(nc, settings.subject_prefix, t, timeout=120) for t in tasks)
        )
    assert [o.status if o else None for o in outcomes] == ["completed"] * len(tasks)
    lines = read_journal(journal)
    model_calls = Counter(line for line in lines if line.startswith("model-call"))
    effects = Counter(line for line in lines if line.startswith("tool-effect"))
    assert set(model_calls.values()) == {1}, model_calls
    assert effects == Counter({f"tool-effect job-{i}": 1 for i in range(len(tasks))})
    for task in tasks:
        assert run_events(settings, task.task_id).count("RunRequested") == 1


async def test_a_task_fetched_while_the_event_loop_is_blocked_is_not_redelivered(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """A worker process whose event loop is blocked for 3 s (a saturated loop) by one
    run, with AckWait 1 s: a task it fetches meanwhile stays alive and runs once.

    (Before: the fetch ran on the worker's event loop, so the second task sat unread in
    the connection while the loop was blocked, passed AckWait, and JetStream redelivered
    it while the worker went on to run the first copy: two model calls for one task.)"""
    journal = tmp_path / "journal.log"
    settings = make_settings(
        "sqlite", catalog=str(write_catalog(tmp_path)), ack_wait_s=1, worker_concurrency=2
    )
    env = settings_env(settings) | {
        JOURNAL_ENV: str(journal),
        MODEL_BLOCK_ENV: "3",  # the `block-...` run blocks the loop
        MODEL_PAUSE_ENV: "2",  # every run's first model call then takes 2 s more
    }
    worker = start_worker_process(env, tmp_path / "worker.log")
    try:
        async with nats_client(settings) as nc:
            blocker = RunAgent(task_id="blocker", agent="effect", prompt="block-0")
            first = asyncio.create_task(submit(nc, settings.subject_prefix, blocker, timeout=60))
            await asyncio.to_thread(
                wait_for,
                lambda: "model-call-1 block-0" in read_journal(journal),
                30,
                "the blocking run's model call",
            )
            waiting = RunAgent(task_id="waiting", agent="effect", prompt="job-1")
            second = await submit(nc, settings.subject_prefix, waiting, timeout=60)
            outcomes = [await first, second]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert [o.status if o else None for o in outcomes] == ["completed", "completed"]
    model_calls = Counter(line for line in read_journal(journal) if line.startswith("model"))
    assert model_calls == Counter(
        {
            "model-call-1 block-0": 1,
            "model-call-2 block-0": 1,
            "model-call-1 job-1": 1,
            "model-call-2 job-1": 1,
        }
    ), (tmp_path / "worker.log").read_text()[-3000:]


async def test_heartbeats_follow_the_durable_consumers_ack_wait_not_the_setting(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """The durable consumer was created with AckWait 1 s (by an earlier worker); this
    worker's setting says 30 s. A run whose model call takes 3 s still runs once.

    (Before: the worker beat every 10 s, its own AckWait / 3; JetStream redelivered the
    task after 1 s and the step ran again - found in the README's crash walkthrough.)"""
    journal = tmp_path / "journal.log"
    catalog = str(write_catalog(tmp_path))
    earlier = make_settings("sqlite", catalog=catalog, ack_wait_s=1)
    settings = make_settings("sqlite", catalog=catalog, ack_wait_s=30)
    async with nats_client(earlier) as nc:
        await ensure_streams(nc.jetstream(), earlier)
        subject = task_subject(earlier.subject_prefix, "*")
        config = worker_consumer(
            earlier,
            name="earlier",
            subject=subject,
            durable=workers_consumer(earlier.subject_prefix),
            handle=_never,
        ).config
        await nc.jetstream().add_consumer(
            earlier.tasks_stream, dataclasses.replace(config, filter_subject=subject)
        )
    env = settings_env(settings) | {JOURNAL_ENV: str(journal), MODEL_PAUSE_ENV: "3"}
    worker = start_worker_process(env, tmp_path / "worker.log")
    try:
        async with nats_client(settings) as nc:
            task = RunAgent(task_id="slow", agent="effect", prompt="job-1")
            outcome = await submit(nc, settings.subject_prefix, task, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert outcome is not None and outcome.status == "completed"
    log = (tmp_path / "worker.log").read_text()
    model_calls = Counter(line for line in read_journal(journal) if line.startswith("model"))
    assert model_calls == Counter({"model-call-1 job-1": 1, "model-call-2 job-1": 1}), log[-3000:]
    assert "AckWait differs" in log  # and the operator is told


async def _never(body: bytes, delivery: object) -> None:
    raise AssertionError("not consumed here")
