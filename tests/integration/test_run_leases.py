"""Run leases (issue 7, item 2): one driver per run across workers, on a real NATS.

- The lease bucket: a held lease is refused to another holder, renewals keep it, a
  release frees it, and a lease that is not renewed lapses by the bucket's TTL; the old
  holder then finds it lost and may not drive the run any more.
- Two workers: a second copy of a task (the same task id under another `Nats-Msg-Id`,
  as a client retrying after the duplicate window sends it) arrives while the first
  copy's run is being driven. It is handed back until the lease is free, then answered
  from the stored outcome: no model call and no tool effect happens twice.
  (Without leases, the second copy resumed the run beside the first: both called the
  model until one save conflicted.)
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import MakeSettings

from agentledger.domain.subjects import task_subject
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import LedgerClient
from agentledger.infra.leases import Held, Lease, LeaseLost, RunLeases, lease_bucket
from support.agents import JOURNAL_ENV, MODEL_PAUSE_ENV, read_journal, write_catalog
from support.harness import nats_client, run_events, running_worker, wait_for

pytestmark = pytest.mark.asyncio


async def test_a_lease_is_held_renewed_released_and_lapses_by_its_ttl(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings("sqlite")
    async with nats_client(settings) as nc:
        js = nc.jetstream()
        first = await RunLeases.open(js, settings.subject_prefix, 1.0, "worker-a")
        second = await RunLeases.open(js, settings.subject_prefix, 30.0, "worker-b")
        assert second.ttl_s == 1.0  # the bucket's TTL, set by its creator, is in force

        lease = await first.acquire("run-1")
        assert isinstance(lease, Lease) and lease.holder.startswith("worker-a")
        lease.check()
        held = await second.acquire("run-1")
        assert isinstance(held, Held) and held.holder == lease.holder
        revision = lease.revision
        await first.renew(lease)
        assert lease.revision > revision and not lease.lost
        await first.release(lease)
        taken = await second.acquire("run-1")
        assert isinstance(taken, Lease)
        await second.release(taken)

        # Not renewed: the lease lapses, another worker takes it, the first may not
        # drive any more (stale first, then lost once its renewal meets the new holder).
        lapsing = await first.acquire("run-2")
        assert isinstance(lapsing, Lease)

        async def taken_over() -> Lease:
            while True:
                got = await second.acquire("run-2")
                if isinstance(got, Lease):
                    return got
                await asyncio.sleep(0.1)

        new = await asyncio.wait_for(taken_over(), 10)
        with pytest.raises(LeaseLost, match="not renewed"):
            lapsing.check()
        await first.renew(lapsing)
        assert lapsing.lost
        with pytest.raises(LeaseLost, match="another worker took over"):
            lapsing.check()
        await first.release(lapsing)  # never deletes the new holder's lease
        assert isinstance(await first.acquire("run-2"), Held)
        await second.release(new)
        info = await js.stream_info(f"KV_{lease_bucket(settings.subject_prefix)}")
        assert info.config.max_age == 1.0


async def test_a_second_copy_of_a_task_being_driven_repeats_no_model_call_or_tool_run(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.log"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    monkeypatch.setenv(MODEL_PAUSE_ENV, "3")
    settings = make_settings(
        "sqlite", catalog=str(write_catalog(tmp_path)), ack_wait_s=2, worker_concurrency=2
    )
    task = RunAgent(task_id="twice", agent="effect", prompt="job-1")
    body = task.model_dump_json(exclude_none=True).encode()
    subject = task_subject(settings.subject_prefix, "effect")
    async with (
        running_worker(settings) as a,
        running_worker(settings),
        nats_client(settings) as nc,
    ):
        js = nc.jetstream()
        await js.publish(subject, body, headers={"Nats-Msg-Id": "twice"})
        await asyncio.to_thread(
            wait_for, lambda: "model-call-1 job-1" in read_journal(journal), 30, "model call"
        )
        again = await js.publish(subject, body, headers={"Nats-Msg-Id": "twice-again"})
        assert not again.duplicate
        outcome = await LedgerClient(nc, prefix=settings.subject_prefix).wait("twice")
        assert outcome is not None and outcome.status == "completed"

        async def settled() -> None:
            consumer = a.worker.durable
            while True:
                info = await js.consumer_info(settings.tasks_stream, consumer)
                if info.num_ack_pending == 0 and info.num_pending == 0:
                    return
                await asyncio.sleep(0.2)

        await asyncio.wait_for(settled(), 30)
    lines = read_journal(journal)
    assert Counter(line for line in lines if not line.startswith("tool-start")) == Counter(
        {"model-call-1 job-1": 1, "tool-effect job-1": 1, "model-call-2 job-1": 1}
    ), lines
    assert run_events(settings, "twice").count("RunRequested") == 1
    stored = json.loads(
        (await _last_outcome(settings)).decode()  # the second copy did not overwrite it
    )
    assert stored["status"] == "completed"


async def _last_outcome(settings: object) -> bytes:
    from agentledger.domain.subjects import results_stream, results_subject

    async with nats_client(settings) as nc:  # type: ignore[arg-type]
        prefix = settings.subject_prefix  # type: ignore[attr-defined]
        msg = await nc.jetstream().get_last_msg(
            results_stream(prefix), results_subject(prefix, "twice")
        )
        return bytes(msg.data or b"")
