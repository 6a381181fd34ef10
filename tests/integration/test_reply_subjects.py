"""A reply subject is an address the sender picks: the worker answers on it only when
it is safe, and a bad one never spoils the task, another task's outcome, the tasks
stream or the worker's connection (issue 7, item 6)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import MakeSettings

from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.client import LedgerClient
from agentledger.handlers.worker import REPLY_HEADER
from support.harness import nats_client, run_events, running_worker

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_hostile_reply_subjects_are_ignored_and_the_tasks_still_complete(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings("sqlite")
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        ledger = LedgerClient(nc, prefix=prefix)
        victim = RunAgent(task_id="victim", agent="greeter", prompt="hello")
        _, victim_outcome = await ledger.run(victim, timeout=30)
        tasks_before = (await nc.jetstream().stream_info(settings.tasks_stream)).state.messages

        hostile = {
            "spoof": f"{prefix}.results.victim",  # would overwrite the victim's outcome
            "task": f"{prefix}.tasks.run.greeter",  # would enqueue the outcome as a task
            "long": "_INBOX." + "x" * 5000,  # over NATS's control line: breaks the link
            "space": "_INBOX.a b",  # BadSubjectError after the outcome was stored
            "system": "$JS.API.STREAM.DELETE.X",
        }
        for name, reply in hostile.items():
            task = RunAgent(task_id=f"h-{name}", agent="calculator", prompt="add 2 and 40")
            results = await nc.subscribe(f"{prefix}.results.h-{name}", max_msgs=1)
            await nc.jetstream().publish(
                f"{prefix}.tasks.run.calculator",
                task.model_dump_json().encode(),
                headers={"Nats-Msg-Id": task.task_id, REPLY_HEADER: reply},
            )
            outcome = RunOutcome.model_validate_json((await results.next_msg(timeout=30)).data)
            assert outcome.status == "completed", (name, outcome)

        # A good reply subject is answered; the worker still serves (not wedged).
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox, max_msgs=1)
        canary = RunAgent(task_id="canary", agent="calculator", prompt="add 1 and 1")
        await nc.jetstream().publish(
            f"{prefix}.tasks.run.calculator",
            canary.model_dump_json().encode(),
            headers={"Nats-Msg-Id": canary.task_id, REPLY_HEADER: inbox},
        )
        answered = RunOutcome.model_validate_json((await replies.next_msg(timeout=30)).data)
        assert answered.task_id == "canary" and answered.status == "completed"

        assert await ledger.outcome("victim") == victim_outcome
        tasks_after = (await nc.jetstream().stream_info(settings.tasks_stream)).state.messages
        assert tasks_after == tasks_before + len(hostile) + 1  # only the tasks themselves
        await asyncio.sleep(1.5)  # a redelivery, if any, would come back by now
    for name in hostile:
        assert run_events(settings, f"h-{name}").count("RunRequested") == 1
        assert run_events(settings, f"h-{name}").count("RunCompleted") == 1
