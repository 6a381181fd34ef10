"""A worker SIGKILLed during a fan-out (issue 11): two real `agentledger worker`
processes run a workflow's four child tasks; one is killed once two children have
finished and a third is under way. The finished children are not run again (their model
calls and tool effects are journaled across processes), and the workflow completes
with every child's result exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path

import nats
import pytest
from conftest import Backend, MakeSettings
from test_graph_crash import wait_for_outcome

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.subjects import graph_task_subject
from agentledger.infra.event_store import EventStore
from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings
from support.agents import JOURNAL_ENV, MODEL_PAUSE_ENV, read_journal
from support.harness import settings_env, start_worker_process, wait_for

pytestmark = pytest.mark.slow


def publish_json(settings: Settings, graph: str, payload: dict[str, object]) -> None:
    """Publish a graph task as a plain NATS client does."""

    async def go() -> None:
        nc = await nats.connect(**nats_connect_kwargs(settings, "test-client"))
        try:
            await nc.jetstream().publish(
                graph_task_subject(settings.subject_prefix, graph),
                json.dumps(payload).encode(),
                headers={"Nats-Msg-Id": str(payload["task_id"])},
            )
        finally:
            await nc.drain()

    asyncio.run(go())


CATALOG = """
[agents.effect]
ref = "support.agents:effect"

[graphs.fanout]
ref = "support.sample_graphs:fanout_graph"
"""


def test_a_worker_killed_during_a_fan_out_reruns_no_finished_child(
    make_settings: MakeSettings, backend: Backend, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    journal = tmp_path / "journal.log"
    # One slot per worker and a 1 s model: two children at a time. A short AckWait
    # brings the killed worker's messages back within seconds.
    settings = make_settings(backend, catalog=str(catalog), ack_wait_s=2, worker_concurrency=1)
    env = settings_env(settings) | {JOURNAL_ENV: str(journal), MODEL_PAUSE_ENV: "1"}
    log = tmp_path / "workers.log"
    first = start_worker_process(env, log)
    other = start_worker_process(env, log)
    second = None
    children = [f"child-{i}" for i in range(4)]
    try:
        publish_json(
            settings,
            "fanout",
            {"task_id": "fan-task", "graph": "fanout", "inputs": [["effect", c] for c in children]},
        )

        def progress() -> bool:
            lines = read_journal(journal)
            done = [line for line in lines if line.startswith("model-call-2")]
            started = [line for line in lines if line.startswith("model-call-1")]
            return len(done) >= 2 and len(started) >= 3

        wait_for(progress, 60, "two children finished and a third under way")
        finished_before = {
            line.split(" ", 1)[1]
            for line in read_journal(journal)
            if line.startswith("model-call-2")
        }
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        second = start_worker_process(env, log)
        outcome = wait_for_outcome(settings, "fan-task", 120)
    finally:
        for process in (other, second):
            if process is not None:
                process.terminate()
                process.wait(30)
    assert outcome["status"] == "completed", (outcome, log.read_text()[-3000:])
    output = outcome["output"]
    assert isinstance(output, dict)
    assert sorted(output["outputs"]) == sorted(f"effect done: applied {c}" for c in children)
    assert output["failed"] == 0

    journaled = Counter(read_journal(journal))
    for child in finished_before:  # finished before the kill: never run again
        assert journaled[f"model-call-1 {child}"] == 1, journaled
        assert journaled[f"tool-effect {child}"] == 1, journaled
        assert journaled[f"model-call-2 {child}"] == 1, journaled
    for child in children:  # every tool effect happened once, whoever ran it
        assert journaled[f"tool-effect {child}"] == 1, journaled

    store = EventStore(settings)
    try:
        events = store.events(graph_run_id_for("fan-task"))
    finally:
        store.close()
    finished = [e.child_task_id for e in events if isinstance(e, GraphRun.ChildFinished)]
    assert len(finished) == len(set(finished)) == 4  # each child's result recorded once
    dispatched = [e for e in events if isinstance(e, GraphRun.ChildrenDispatched)]
    assert len(dispatched) == 1
    assert json.dumps(output)  # the merged result is plain JSON
