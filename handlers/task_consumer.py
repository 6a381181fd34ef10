"""The worker's JetStream pull loop: it fetches only as many tasks as it has free slots,
and each task's handler (which heartbeats) starts the moment the task arrives.

Why not FastStream's concurrent pull subscriber: it fetches a batch and parks what does
not fit behind its semaphore, without heartbeats. A parked task can pass AckWait and be
redelivered to another worker while this one still holds it; both then drive the same
run, and model calls and unrecorded tools run twice. Here a message is never held
without a slot, so it is never redelivered while a worker has it (unless the worker
loses NATS for longer than AckWait; then the second driver's first save conflicts with
the first's recorded steps, and it stops: `RunSuperseded`).

With a tracer, each delivery is a `<subject> process` consumer span (continuing a
`traceparent` header), under which the handler's own spans hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from agentledger.handlers.heartbeats import Heartbeats

__all__ = ["Delivery", "TaskConsumer"]

log = structlog.get_logger("agentledger.worker")

MAX_BATCH = 64
"""At most this many tasks per fetch (and never more than the free slots)."""
FETCH_WAIT_S = 1.0
"""How long one pull request waits on an empty stream."""


class Delivery:
    """A fetched task message. It is settled once (ack, nak or term); later calls, such
    as a drain releasing a run that just finished, do nothing."""

    def __init__(self, msg: Msg) -> None:
        self.raw_message = msg
        self.settled = False

    @property
    def body(self) -> bytes:
        return self.raw_message.data

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            await self.raw_message.ack()

    async def nack(self, delay: float | None = None) -> None:
        if not self.settled:
            self.settled = True
            await self.raw_message.nak(delay=delay)

    async def reject(self) -> None:
        if not self.settled:
            self.settled = True
            await self.raw_message.term()


Handler = Callable[[bytes, Delivery], Awaitable[None]]


class TaskConsumer:
    """Pulls from the shared durable consumer into at most `capacity` running handlers."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        subject: str,
        stream: str,
        durable: str,
        config: ConsumerConfig,
        capacity: int,
        handle: Handler,
        tracer: Tracer | None = None,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        """With `heartbeats`, each message is kept alive from the heartbeat thread from
        the moment its fetch returns, before its handler first runs (a saturated event
        loop may start it late)."""
        self._js = js
        self._subject = subject
        self._stream = stream
        self._durable = durable
        self._config = config
        self._capacity = capacity
        self._handle = handle
        self._tracer = tracer
        self._heartbeats = heartbeats
        self._running: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        self._subscription = await self._js.pull_subscribe(
            self._subject, durable=self._durable, stream=self._stream, config=self._config
        )
        self._loop_task = asyncio.create_task(self._pull(), name="agentledger-task-pull")

    async def stop_fetching(self) -> None:
        """No more fetches; handlers already running carry on."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def close(self) -> None:
        await self.stop_fetching()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _pull(self) -> None:
        assert self._subscription is not None
        while True:
            free = self._capacity - len(self._running)
            if free <= 0:
                self._freed.clear()
                await self._freed.wait()
                continue
            try:
                messages = await self._subscription.fetch(
                    batch=min(free, MAX_BATCH), timeout=FETCH_WAIT_S
                )
            except (NatsTimeoutError, TimeoutError):
                continue  # an empty stream
            except (ConnectionClosedError, NoServersError):
                await asyncio.sleep(0.5)  # reconnecting
                continue
            except Exception as e:  # never let one failed fetch end the worker
                log.warning("task fetch failed; retrying", error=str(e))
                await asyncio.sleep(1.0)
                continue
            for msg in messages:
                self._spawn(Delivery(msg))

    def _spawn(self, delivery: Delivery) -> None:
        heartbeats, reply = self._heartbeats, delivery.raw_message.reply
        token = heartbeats.add(reply) if heartbeats is not None and reply else None
        task = asyncio.create_task(self._traced(delivery))
        self._running.add(task)
        task.add_done_callback(self._finished)
        if token is not None:
            assert heartbeats is not None
            task.add_done_callback(lambda _: heartbeats.remove(token))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("task handler raised", error=repr(task.exception()))

    async def _traced(self, delivery: Delivery) -> None:
        if self._tracer is None:
            await self._handle(delivery.body, delivery)
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        msg = delivery.raw_message
        attributes: dict[str, Any] = {
            "messaging.system": "nats",
            "messaging.destination.name": msg.subject,
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": self._durable,
            "messaging.message.body.size": len(msg.data),
        }
        with self._tracer.start_as_current_span(
            f"{msg.subject} process",
            context=propagate.extract(msg.headers or {}),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):
            await self._handle(delivery.body, delivery)
