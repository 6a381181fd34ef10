"""A small typed Python client for agentledger: submit tasks, wait for outcomes, query views.

It speaks only the public contract over NATS (nats-py and the pydantic task models); it
imports neither FastStream nor pydantic-ai, so it fits in any service that only sends
work. Any other NATS client can do the same (see the README's contract section).

    async with await LedgerClient.connect("nats://127.0.0.1:4222") as ledger:
        submission, outcome = await ledger.run(
            RunAgent(task_id="task-42", agent="calculator", prompt="add 2 and 40")
        )
        if submission.duplicate:
            print("task-42 was submitted before; this is its stored outcome")
        print(outcome.status, outcome.output)
        runs = await ledger.query("runs", agent="calculator", limit=5)

A task id is an idempotency key: publishing the same id again is dropped by JetStream's
duplicate window (`Submission.duplicate`) or, later, answered by the worker with the
stored outcome; either way the outcome is the first task's, never a second run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

import nats
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from agentledger.domain.memory.recall import MemoryHit
from agentledger.domain.streaming.chunks import StreamChunk
from agentledger.domain.subjects import (
    query_subject,
    results_stream,
    results_subject,
    stream_ack_subject,
    stream_subject,
    task_subject,
    tasks_stream,
    workers_consumer,
)
from agentledger.domain.tasks import RunAgent, RunOutcome

__all__ = [
    "ClientError",
    "LedgerClient",
    "OutcomeTimeout",
    "QueryFailed",
    "QueryUnavailable",
    "Submission",
    "WaitingFor",
    "query_over_nats",
    "submit",
]

Out = TypeVar("Out", bound=BaseModel)

DEFAULT_URL = "nats://127.0.0.1:4222"


_NO_RESPONDER_GRACE_S = 1.5
"""How long a query waits for a responder to appear (a restart, cluster propagation)."""


class ClientError(Exception):
    """Something the client could not do; the message says what to do about it."""


class OutcomeTimeout(ClientError):
    """No outcome arrived in time (the task stays queued; it is not cancelled)."""


class QueryFailed(ClientError):
    """The query responder answered with an error (unknown view, bad argument, ...)."""


class QueryUnavailable(ClientError):
    """Nobody answers queries on this prefix: no `agentledger project` is running."""


@dataclass(frozen=True, kw_only=True)
class Submission:
    """What JetStream said when the task was published."""

    task_id: str
    duplicate: bool
    """True when JetStream dropped this publish: a task with the same id was accepted
    earlier (within the duplicate window). Its outcome is that earlier task's."""
    sequence: int
    """The tasks stream's sequence number of the accepted (earlier, if duplicate) task."""


@dataclass(frozen=True, kw_only=True)
class WaitingFor:
    """Reported while an outcome is slow to come: what the client is waiting for."""

    task_id: str
    subject: str
    """Where the outcome will be published."""
    seconds: float
    workers_listening: bool | None
    """Whether any worker is pulling tasks of this prefix (None: could not tell)."""
    tasks_pending: int | None
    """Tasks in the queue not yet handed to a worker (None: no worker ever started)."""


class LedgerClient:
    """Submit `RunAgent` tasks, wait for their `RunOutcome`, and query the views."""

    def __init__(self, nc: Client, *, prefix: str = "ledger", owns_connection: bool = False):
        """Wrap a connected nats-py client; `prefix` is the deployment's subject prefix."""
        self.nc = nc
        self.prefix = prefix
        self._owns_connection = owns_connection

    @classmethod
    async def connect(
        cls,
        url: str = DEFAULT_URL,
        *,
        prefix: str = "ledger",
        connect_timeout: float = 2.0,
        **options: Any,
    ) -> LedgerClient:
        """Connect to NATS (`options` go to `nats.connect`: user, password, token, tls...)."""
        nc = await nats.connect(
            url, connect_timeout=connect_timeout, allow_reconnect=True, **options
        )
        return cls(nc, prefix=prefix, owns_connection=True)

    async def close(self) -> None:
        """Drain and close the connection if this client opened it."""
        if self._owns_connection:
            await self.nc.drain()

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- tasks -------------------------------------------------------------------------

    async def submit(self, task: RunAgent) -> Submission:
        """Publish the task (`Nats-Msg-Id` = task id) and return JetStream's answer."""
        ack = await self.nc.jetstream().publish(
            task_subject(self.prefix, task.agent),
            task.model_dump_json(exclude_none=True).encode(),
            headers={"Nats-Msg-Id": task.task_id},
        )
        return Submission(task_id=task.task_id, duplicate=bool(ack.duplicate), sequence=ack.seq)

    @overload
    async def outcome(self, task_id: str) -> RunOutcome | None: ...
    @overload
    async def outcome(self, task_id: str, model: type[Out]) -> Out | None: ...
    async def outcome(self, task_id: str, model: type[BaseModel] = RunOutcome) -> Any:
        """The stored outcome of a task, or None if it has none (yet); `model` is the
        outcome's type for other tasks than `RunAgent` (`EvaluationOutcome`, ...)."""
        try:
            msg = await self.nc.jetstream().get_last_msg(
                results_stream(self.prefix), results_subject(self.prefix, task_id)
            )
        except NotFoundError:
            return None
        return model.model_validate_json(msg.data or b"{}")

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float = 60.0,
        on_waiting: Callable[[WaitingFor], None] | None = None,
        notice_after: float = 2.0,
    ) -> RunOutcome:
        """Wait for a task's outcome (stored or still to come).

        `on_waiting` is called once after `notice_after` seconds without an outcome, with
        what the client is waiting for and whether any worker is listening.
        """
        subscription = await self.nc.subscribe(results_subject(self.prefix, task_id), max_msgs=1)
        return await self._await(
            subscription, task_id, timeout, on_waiting, notice_after, stored_first=True
        )

    async def stream(
        self,
        task_id: str,
        *,
        after: int = 0,
        ack: bool = True,
        idle_timeout: float = 60.0,
    ) -> AsyncIterator[StreamChunk]:
        """The chunks of a streamed task (`stream: true`), in order, up to and including
        its `end` chunk.

        It reads the `<PREFIX>_STREAMS` stream from its start, so it may be called before
        or after the task is published, and after a reconnect it resumes: pass the last
        `seq` it saw as `after`. With `ack` it acknowledges each chunk once the loop asks
        for the next (the flow control of `slow_down` and `drop_oldest`). Raises
        `TimeoutError` after `idle_timeout` seconds without a chunk.
        """
        js = self.nc.jetstream()
        subscription = await js.subscribe(
            stream_subject(self.prefix, task_id),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        ack_subject = stream_ack_subject(self.prefix, task_id)
        try:
            while True:
                try:
                    msg = await subscription.next_msg(timeout=idle_timeout)
                except NatsTimeoutError:
                    raise TimeoutError(
                        f"no stream chunk of task {task_id} for {idle_timeout:g}s"
                    ) from None
                chunk = StreamChunk.model_validate_json(msg.data)
                if chunk.seq <= after:
                    continue
                after = chunk.seq
                yield chunk
                if chunk.kind == "end":
                    return
                if ack:
                    await self.nc.publish(ack_subject, json.dumps({"ack": chunk.seq}).encode())
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def run(
        self,
        task: RunAgent,
        *,
        timeout: float = 60.0,
        on_waiting: Callable[[WaitingFor], None] | None = None,
        notice_after: float = 2.0,
    ) -> tuple[Submission, RunOutcome]:
        """Submit the task and wait for its outcome (subscribed before publishing)."""
        subscription = await self.nc.subscribe(
            results_subject(self.prefix, task.task_id), max_msgs=1
        )
        try:
            submission = await self.submit(task)
        except BaseException:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            raise
        outcome = await self._await(
            subscription,
            task.task_id,
            timeout,
            on_waiting,
            notice_after,
            # A fresh task's outcome arrives on the subscription; a duplicate's is stored.
            stored_first=submission.duplicate,
        )
        return submission, outcome

    async def workers_listening(self, durable: str | None = None) -> tuple[bool | None, int | None]:
        """(any worker pulling tasks?, tasks not yet delivered), from the shared durable
        consumer (`durable`: another kind's, e.g. the eval workers'; default the agent
        workers'); (False, None) when no worker has ever started on this prefix."""
        try:
            info = await self.nc.jetstream().consumer_info(
                tasks_stream(self.prefix), durable or workers_consumer(self.prefix)
            )
        except NotFoundError:
            return False, None
        except Exception:
            return None, None
        return bool(info.num_waiting), info.num_pending

    async def _await(
        self,
        subscription: Subscription,
        task_id: str,
        timeout: float,
        on_waiting: Callable[[WaitingFor], None] | None,
        notice_after: float,
        *,
        stored_first: bool,
    ) -> RunOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        noticed = on_waiting is None
        check_stored = stored_first
        try:
            while True:
                # An outcome published before we subscribed (or a duplicate's, which is
                # not run again) is in the results stream.
                if check_stored:
                    stored = await self.outcome(task_id)
                    if stored is not None:
                        return stored
                check_stored = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise OutcomeTimeout(
                        f"no outcome for task {task_id} within {timeout:g}s; it stays queued"
                        f" (check later with `agentledger query run --task-id {task_id}`)"
                    )
                if not noticed and loop.time() - started >= notice_after:
                    noticed = True
                    listening, pending = await self.workers_listening()
                    assert on_waiting is not None
                    on_waiting(
                        WaitingFor(
                            task_id=task_id,
                            subject=results_subject(self.prefix, task_id),
                            seconds=loop.time() - started,
                            workers_listening=listening,
                            tasks_pending=pending,
                        )
                    )
                with contextlib.suppress(NatsTimeoutError):
                    msg = await subscription.next_msg(timeout=min(1.0, max(remaining, 0.01)))
                    return RunOutcome.model_validate_json(msg.data)
        finally:
            with contextlib.suppress(Exception):  # already gone after its one message
                await subscription.unsubscribe()

    # -- queries -----------------------------------------------------------------------

    async def query(self, view: str, timeout: float = 5.0, **arguments: Any) -> Any:
        """Ask the query responder (`<prefix>.query.<view>`) and return its data."""
        subject = query_subject(self.prefix, view)
        payload = json.dumps({k: v for k, v in arguments.items() if v is not None}).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        give_up = min(deadline, loop.time() + _NO_RESPONDER_GRACE_S)
        pause = 0.05
        while True:
            try:
                reply = await self.nc.request(subject, payload, max(deadline - loop.time(), 0.01))
                break
            except NoRespondersError:
                # Interest in a subject reaches the servers a moment after a responder
                # subscribes (at once on one server, eventually across a cluster): a
                # responder starting or restarting is asked again, within the timeout.
                if loop.time() + pause >= give_up:
                    raise QueryUnavailable(
                        f"no query responder on {subject}: start `agentledger project`"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.4)
            except NatsTimeoutError:
                raise QueryUnavailable(
                    f"no answer on {subject} within {timeout:g}s: is `agentledger project` running?"
                ) from None
        body = json.loads(reply.data)
        if not body.get("ok"):
            raise QueryFailed(body.get("error", "query failed"))
        return body["data"]

    async def search_similar(
        self,
        query: str,
        k: int = 5,
        *,
        agent: str | None = None,
        session: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        role: str | None = None,
        timeout: float = 10.0,
    ) -> list[MemoryHit]:
        """The `k` stored prompts and outputs most similar to `query`, best first
        (`<prefix>.query.memory`; `since`/`until` must carry a time zone)."""
        data = await self.query(
            "memory",
            timeout=timeout,
            query=query,
            k=k,
            agent=agent,
            session_id=session,
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            role=role,
        )
        return [MemoryHit.model_validate(hit) for hit in data]


async def submit(
    nc: Client, prefix: str, task: RunAgent, *, wait: bool = True, timeout: float = 60.0
) -> RunOutcome | None:
    """Publish the task; with `wait`, return its outcome (see `LedgerClient.run`)."""
    client = LedgerClient(nc, prefix=prefix)
    if not wait:
        await client.submit(task)
        return None
    _, outcome = await client.run(task, timeout=timeout)
    return outcome


async def query_over_nats(
    nc: Client, prefix: str, view: str, arguments: dict[str, Any], timeout: float = 5.0
) -> Any:
    """Ask the query responder; returns the data or raises `QueryFailed` /
    `QueryUnavailable`."""
    return await LedgerClient(nc, prefix=prefix).query(view, timeout=timeout, **arguments)
