"""The store down past a task's last delivery: the message becomes a dead letter, the
task is answered, and `agentledger dead retry` requeues it onto the same run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MakeSettings

from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.client import submit
from support.harness import nats_client, run_events, running_worker, settings_env
from support.postgres_server import EmbeddedPostgres

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

AGENTLEDGER = str(Path(sys.executable).with_name("agentledger"))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTLEDGER, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_store_down_past_the_last_delivery_gives_a_dead_letter_and_an_outcome(
    own_postgres: EmbeddedPostgres, make_settings: MakeSettings
) -> None:
    dsn = own_postgres.create_database("dead")
    settings = make_settings("postgres", postgres_dsn=dsn, max_deliveries=2, store_retry_s=0.2)
    env = settings_env(settings)
    task = RunAgent(task_id="dl-1", agent="calculator", prompt="add 2 and 40")
    async with running_worker(settings), nats_client(settings) as nc:
        await asyncio.to_thread(own_postgres.stop)
        try:
            # Each store call retries for ~20 s while the database is down (eventsourcing's
            # own retries), so the two deliveries and the give-up take about a minute.
            outcome = await submit(nc, settings.subject_prefix, task, timeout=180)
        finally:
            await asyncio.to_thread(own_postgres.start)
        assert outcome is not None and outcome.status == "failed"
        assert outcome.error is not None and outcome.error.kind == "dead_lettered"
        assert "gave up after 2 deliveries" in outcome.error.message
        assert "agentledger dead retry 1" in outcome.error.message

        listed = await asyncio.to_thread(_cli, env, "dead", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (letter,) = json.loads(listed.stdout)
        assert letter["task_id"] == "dl-1" and letter["delivered"] == 2
        assert letter["kind"] == "transient_exhausted"
        assert letter["subject"] == f"{settings.subject_prefix}.tasks.run.calculator"
        assert json.loads(letter["payload"])["prompt"] == "add 2 and 40"
        assert letter["headers"]["Nats-Msg-Id"] == "dl-1"
        shown = await asyncio.to_thread(_cli, env, "dead", "show", "1")
        assert shown.returncode == 0 and "gave up after 2 deliveries" in shown.stdout

        # The store is back: the retry keeps the task id and lands on the same run.
        results = await nc.subscribe(f"{settings.subject_prefix}.results.dl-1", max_msgs=1)
        retried = await asyncio.to_thread(_cli, env, "dead", "retry", "1")
        assert retried.returncode == 0, retried.stderr
        assert "requeued dead letter 1 (task dl-1)" in retried.stdout
        final = RunOutcome.model_validate_json((await results.next_msg(timeout=60)).data)
        assert final.status == "completed" and final.output == "The result is 42.0."
        assert (
            json.loads((await asyncio.to_thread(_cli, env, "dead", "list", "--json")).stdout) == []
        )
        # The stored outcome is the completed one, not the earlier dead-letter answer.
        js = nc.jetstream()
        stored = await js.get_last_msg(
            f"{settings.subject_prefix.upper()}_RESULTS", f"{settings.subject_prefix}.results.dl-1"
        )
        assert RunOutcome.model_validate_json(stored.data).status == "completed"
    assert run_events(settings, "dl-1").count("RunRequested") == 1


async def test_a_route_task_past_its_last_delivery_is_dead_lettered_and_retried(
    own_postgres: EmbeddedPostgres, make_settings: MakeSettings
) -> None:
    """The route worker keeps the same rules: the store down on the last delivery gives a
    dead letter and a `dead_lettered` outcome; the retry routes and runs it once."""
    dsn = own_postgres.create_database("deadroute")
    settings = make_settings("postgres", postgres_dsn=dsn, max_deliveries=2, store_retry_s=0.2)
    env = settings_env(settings)
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        results = await nc.subscribe(f"{prefix}.results.rt-1")
        await asyncio.to_thread(own_postgres.stop)
        try:
            await nc.jetstream().publish(
                f"{prefix}.tasks.route",
                json.dumps({"task_id": "rt-1", "prompt": "multiply 6 and 7"}).encode(),
                headers={"Nats-Msg-Id": "rt-1"},
            )
            first = json.loads((await results.next_msg(timeout=180)).data)
        finally:
            await asyncio.to_thread(own_postgres.start)
        assert first["status"] == "failed" and first["error"]["kind"] == "dead_lettered"
        assert "agentledger dead retry 1" in first["error"]["message"]
        listed = json.loads((await asyncio.to_thread(_cli, env, "dead", "list", "--json")).stdout)
        assert [(d["task_id"], d["subject"]) for d in listed] == [("rt-1", f"{prefix}.tasks.route")]
        retried = await asyncio.to_thread(_cli, env, "dead", "retry", "1")
        assert retried.returncode == 0, retried.stderr
        final = json.loads((await results.next_msg(timeout=60)).data)
        assert final["status"] == "completed" and final["route"]["name"] == "arithmetic"
        assert "42" in str(final["output"])
