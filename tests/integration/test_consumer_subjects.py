"""A durable consumer created by an older worker keeps the subjects it was created with;
a worker that takes one more subject brings it up to date when it starts.

(The graph workers' consumer took `<prefix>.tasks.graph.*`; workflow cancels arrive on
`<prefix>.tasks.workflow.cancel`. Without the update a deployment that upgraded its
workers would never see a workflow cancel.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MakeSettings
from nats.js.api import AckPolicy, ConsumerConfig

from agentledger.domain.subjects import (
    graph_task_subject,
    graph_workers_consumer,
    workflow_cancel_subject,
)
from agentledger.infra.nats import ensure_streams
from support.agents import CATALOG
from support.harness import nats_client, running_worker, stored_outcome

pytestmark = pytest.mark.asyncio


async def test_an_older_graph_consumer_is_given_the_workflow_cancel_subject(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG + '[graphs.fanout]\nref = "support.sample_graphs:fanout_graph"\n')
    settings = make_settings("sqlite", catalog=str(catalog))
    prefix = settings.subject_prefix
    durable = graph_workers_consumer(prefix)
    async with nats_client(settings) as nc:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        await js.add_consumer(  # as a worker before this version created it
            settings.tasks_stream,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=f"{prefix}.tasks.graph.*",
            ),
        )
        async with running_worker(settings):
            info = await js.consumer_info(settings.tasks_stream, durable)
            assert sorted(info.config.filter_subjects or []) == sorted(
                [f"{prefix}.tasks.graph.*", workflow_cancel_subject(prefix)]
            )
            body = {"task_id": "wf-old", "graph": "fanout", "inputs": [["echo", "a"]]}
            await js.publish(
                graph_task_subject(prefix, "fanout"),
                json.dumps(body).encode(),
                headers={"Nats-Msg-Id": "wf-old"},
            )
            assert (await stored_outcome(nc, settings, "wf-old"))["status"] == "completed"
            # A cancel on the workflow subject reaches the worker (and is answered).
            reply = nc.new_inbox()
            sub = await nc.subscribe(reply, max_msgs=1)
            await js.publish(
                workflow_cancel_subject(prefix),
                json.dumps({"task_id": "wf-old"}).encode(),
                headers={"Agentledger-Reply-To": reply},
            )
            answer = json.loads((await sub.next_msg(timeout=20)).data)
    assert answer["status"] == "rejected"  # it had finished: run_finished, answered
    assert answer["error"]["kind"] == "run_finished"
