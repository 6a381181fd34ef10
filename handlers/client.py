"""Client side of the task contract: publish a `RunAgent`, optionally wait for its outcome.

Used by the CLI and the demo; any nats-py client can do the same (see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.handlers.worker import task_subject
from agentledger.infra.nats import results_stream

__all__ = ["OutcomeTimeout", "query_over_nats", "submit"]


class OutcomeTimeout(Exception):
    """No outcome arrived in time (the task stays queued; it is not cancelled)."""


async def _stored_outcome(nc: Client, prefix: str, task_id: str) -> RunOutcome | None:
    try:
        msg = await nc.jetstream().get_last_msg(
            results_stream(prefix), f"{prefix}.results.{task_id}"
        )
    except NotFoundError:
        return None
    return RunOutcome.model_validate_json(msg.data or b"{}")


async def submit(
    nc: Client, prefix: str, task: RunAgent, *, wait: bool = True, timeout: float = 60.0
) -> RunOutcome | None:
    """Publish the task (`Nats-Msg-Id` = task id); with `wait`, return its outcome."""
    results = f"{prefix}.results.{task.task_id}"
    subscription = await nc.subscribe(results, max_msgs=1) if wait else None
    try:
        await nc.jetstream().publish(
            task_subject(prefix, task.agent),
            task.model_dump_json(exclude_none=True).encode(),
            headers={"Nats-Msg-Id": task.task_id},
        )
        if subscription is None:
            return None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise OutcomeTimeout(f"no outcome for task {task.task_id} within {timeout:g}s")
            try:
                msg = await subscription.next_msg(timeout=min(1.0, remaining))
                return RunOutcome.model_validate_json(msg.data)
            except NatsTimeoutError:
                # A duplicate of an already finished task is not run again: its stored
                # outcome is in the results stream.
                stored = await _stored_outcome(nc, prefix, task.task_id)
                if stored is not None:
                    return stored
    finally:
        if subscription is not None:
            with contextlib.suppress(Exception):  # already gone after its one message
                await subscription.unsubscribe()


async def query_over_nats(
    nc: Client, prefix: str, view: str, arguments: dict[str, Any], timeout: float = 5.0
) -> Any:
    """Ask the query responder; returns the data or raises `RuntimeError` with its error."""
    reply = await nc.request(f"{prefix}.query.{view}", json.dumps(arguments).encode(), timeout)
    body = json.loads(reply.data)
    if not body.get("ok"):
        raise RuntimeError(body.get("error", "query failed"))
    return body["data"]
