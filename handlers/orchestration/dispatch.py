"""Dispatching a graph run's child tasks (`call_agents`) over NATS.

Each child is a plain `RunAgent` task on `<prefix>.tasks.run.<agent>`, so any worker
runs it: `Nats-Msg-Id` is the child's task id (a repeated dispatch is dropped or answered
from the stored outcome), and the correlation (workflow) and causation (request
message) ids travel in its metadata and in headers. The request message itself is
published on `<prefix>.messages.<workflow>.<agent>` (`.all` for a broadcast, once) for
whoever follows the workflow (core NATS: it is also recorded, in the run's
`ChildrenDispatched` event).
"""

from __future__ import annotations

import contextlib

from faststream.nats import NatsBroker

from agentledger.domain.orchestration.messages import (
    CAUSATION_HEADER,
    CAUSATION_KEY,
    CORRELATION_HEADER,
    CORRELATION_KEY,
    AgentMessage,
    message_subject,
)
from agentledger.domain.subjects import task_subject
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.graphs.runner import ChildDispatcher

__all__ = ["nats_dispatcher"]


def nats_dispatcher(broker: NatsBroker, prefix: str) -> ChildDispatcher:
    async def dispatch(tasks: list[RunAgent], messages: list[AgentMessage]) -> None:
        nc = broker.connection
        js = nc.jetstream()
        for task in tasks:
            ids = {
                CORRELATION_HEADER: task.metadata[CORRELATION_KEY],
                CAUSATION_HEADER: task.metadata[CAUSATION_KEY],
            }
            await js.publish(
                task_subject(prefix, task.agent),
                task.model_dump_json(exclude_none=True).encode(),
                headers={"Nats-Msg-Id": task.task_id, **ids},
            )
        for message in messages:
            with contextlib.suppress(Exception):  # recorded already; this is a feed
                await nc.publish(
                    message_subject(prefix, message), message.model_dump_json().encode()
                )

    return dispatch
