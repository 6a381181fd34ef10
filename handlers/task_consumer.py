"""The worker's JetStream pull loop. It runs on a thread of its own, with its own NATS
connection, so that a saturated event loop cannot let a task's AckWait expire.

Why a thread. JetStream starts a message's AckWait the moment it delivers the message.
The worker keeps it alive by saying it is in progress (`+WPI`) more often than that. Two
things used to happen on the worker's event loop, and both came late when hundreds of
runs kept the loop busy on two cores:
- the fetch reply sat in the connection's buffer until the loop read it;
- the heartbeats went out late.
A task could then be redelivered to another worker while this one still held it (the
chaos bench, 2,000 tasks at once with a 2 s AckWait, showed 229 repeated model calls).
Here the feed thread fetches, starts beating for each message the moment its fetch
returns, and only then hands it to the event loop. The message stays alive however long
the loop takes to start its run. Acks, naks and terms go back through the same thread
and connection, after the message's beats stop, so no beat follows a settlement.

Why not FastStream's concurrent pull subscriber: it fetches a batch and parks what does
not fit behind its semaphore, without heartbeats. The feed fetches only as many messages
as there are free slots. Redelivery to a second worker remains possible if this worker
loses NATS (or stalls) for longer than AckWait, and a second copy of a task can arrive
while its run is driven. Run leases (`infra/leases.py`, renewed here with the
heartbeats) keep such a copy from driving the run beside the first, and stop a driver
that lost its lease before its next model call; an in-flight step that still finishes
meets the version check at its save (`RunSuperseded`).

With a tracer, each delivery is a `<subject> process` consumer span (continuing a
`traceparent` header), under which the handler's own spans hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import nats
import structlog
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from agentledger.infra.leases import Held, Lease, RunLeases, worker_holder
from agentledger.infra.nats import nats_connect_kwargs
from agentledger.infra.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = [
    "RELEASE_DELAY_S",
    "Delivery",
    "TaskConsumer",
    "release_in_flight",
    "worker_consumer",
]

log = structlog.get_logger("agentledger.worker")

MAX_BATCH = 64
"""At most this many tasks per fetch (and never more than the free slots)."""
FETCH_WAIT_S = 1.0
"""How long one pull request waits on an empty stream."""
DRAIN_WAIT_S = 0.05
"""After the first message, how long the fetch of what else is waiting may take."""
_IN_PROGRESS = b"+WPI"
RELEASE_DELAY_S = 3.0
"""Redelivery delay of a task released by a draining worker."""
_STOP_POLL_S = 0.05


Settle = Callable[[Coroutine[Any, Any, None]], Awaitable[None]]


Acquire = Callable[[str], Awaitable["Lease | Held | None"]]


class Delivery:
    """A fetched task message. It is settled once (ack, nak or term); later calls, such
    as a drain releasing a run that just finished, do nothing.

    `settle` runs the settling coroutine where the message's connection lives (the feed
    thread); without it, on the current loop. `acquire` takes a run lease for this
    delivery (renewed with its heartbeats, released when its handler ends); without it
    there are no leases (`acquire_lease` returns None)."""

    def __init__(
        self,
        msg: Msg,
        settle: Settle | None = None,
        stop_beating: Any = None,
        acquire: Acquire | None = None,
    ) -> None:
        self.raw_message = msg
        self.settled = False
        self._settle = settle
        self._stop_beating: Callable[[], None] | None = stop_beating
        self._acquire = acquire
        self.lease: Lease | None = None

    async def acquire_lease(self, run_id: str) -> Lease | Held | None:
        """This delivery's lease on `run_id`, or who holds it (None: no leases)."""
        if self._acquire is None:
            return None
        got = await self._acquire(run_id)
        if isinstance(got, Lease):
            self.lease = got
        return got

    @property
    def body(self) -> bytes:
        return self.raw_message.data

    async def _send(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        stop_beating = self._stop_beating

        async def settle() -> None:
            if stop_beating is not None:
                stop_beating()
            await make()

        if self._settle is None:
            await settle()
        else:
            await self._settle(settle())

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            await self._send(self.raw_message.ack)

    async def nack(self, delay: float | None = None) -> None:
        if not self.settled:
            self.settled = True
            await self._send(lambda: self.raw_message.nak(delay=delay))

    async def reject(self) -> None:
        if not self.settled:
            self.settled = True
            await self._send(self.raw_message.term)


Handler = Callable[[bytes, Delivery], Awaitable[None]]


async def release_in_flight(
    in_flight: dict[asyncio.Task[Any], Delivery], grace_s: float, what: str = "runs"
) -> None:
    """Wait up to `grace_s` for the handlers in flight; release the rest.

    A released message is nak'ed before its handler is cancelled, with a short delay so
    that this worker's own open pull requests (alive until the connection closes) do
    not take it back; another worker then resumes the run from what it recorded."""
    pending = set(in_flight)
    if not pending:
        return
    log.info(f"draining in-flight {what}", count=len(pending), grace_s=grace_s)
    _, still = await asyncio.wait(pending, timeout=grace_s)
    for task in still:
        msg = in_flight.get(task)
        if msg is not None:
            with contextlib.suppress(Exception):
                await msg.nack(delay=RELEASE_DELAY_S)
        task.cancel()
    if still:
        log.info(f"released unfinished {what}", count=len(still))
        await asyncio.wait(still, timeout=RELEASE_DELAY_S / 2)


class TaskConsumer:
    """Pulls from the shared durable consumer into at most `capacity` running handlers.

    The pulling, the heartbeats and the settlements happen on the feed thread; the
    handlers run on the event loop that called `start`.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        name: str,
        subject: str,
        stream: str,
        durable: str,
        config: ConsumerConfig,
        capacity: int,
        handle: Handler,
        heartbeat_s: float,
        tracer: Tracer | None = None,
        lease_ttl_s: float | None = None,
    ) -> None:
        """With `lease_ttl_s`, handlers can take run leases (`Delivery.acquire_lease`)
        in the `<PREFIX>_LEASES` bucket, created with that TTL if missing."""
        self._settings = settings
        self._name = name
        self._subject = subject
        self._stream = stream
        self._durable = durable
        self._config = config
        self._capacity = capacity
        self._handle = handle
        self._heartbeat_s = heartbeat_s
        self._tracer = tracer
        self._running: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Shared with the feed thread (under _lock).
        self._lock = threading.Lock()
        self._in_hand = 0
        self._beating: dict[int, str] = {}
        self._tokens = itertools.count()
        self._fetching = threading.Event()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._feed_loop: asyncio.AbstractEventLoop | None = None
        self._freed: asyncio.Event | None = None  # the feed loop's
        self._lease_ttl_s = lease_ttl_s
        self.leases: RunLeases | None = None
        self._leased: dict[int, Lease] = {}  # token -> lease, under _lock

    @property
    def config(self) -> ConsumerConfig:
        """The durable consumer's config this consumer creates it with."""
        return self._config

    # -- the event loop's side ------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        """Connect the feed thread, bind the consumer, and start fetching; raises if the
        connection or the subscription fails."""
        self._loop = asyncio.get_running_loop()
        self._fetching.set()
        self._thread = threading.Thread(target=self._run, name="agentledger-task-feed", daemon=True)
        self._thread.start()
        ready = await asyncio.to_thread(self._ready.wait, timeout)
        if self._error is not None:
            raise self._error
        if not ready:
            raise TimeoutError("the task feed's NATS connection did not come up")

    async def stop_fetching(self) -> None:
        """No more fetches (a fetch under way ends within FETCH_WAIT_S); handlers already
        running carry on, and their settlements still go through."""
        self._fetching.clear()
        self._wake_feed()

    async def close(self) -> None:
        """Stop the feed thread and its connection (after the handlers are done)."""
        self._fetching.clear()
        self._closing.set()
        self._wake_feed()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    def _spawn(self, msg: Msg, token: int) -> None:
        acquire = None if self.leases is None else lambda run_id: self._acquire(token, run_id)
        delivery = Delivery(msg, self._settle, lambda: self._stop_beating(token), acquire)
        task = asyncio.create_task(self._traced(delivery))
        self._running.add(task)
        task.add_done_callback(lambda t: self._finished(t, token))

    def _finished(self, task: asyncio.Task[None], token: int) -> None:
        self._running.discard(task)
        self._stop_beating(token)
        self._release(token)
        with self._lock:
            self._in_hand -= 1
        self._wake_feed()
        if not task.cancelled() and task.exception() is not None:
            log.error("task handler raised", error=repr(task.exception()))

    async def _settle(self, coro: Coroutine[Any, Any, None]) -> None:
        feed_loop = self._feed_loop
        if feed_loop is None or feed_loop.is_closed():
            coro.close()
            raise ConnectionClosedError
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, feed_loop))

    async def _acquire(self, token: int, run_id: str) -> Lease | Held:
        leases = self.leases
        assert leases is not None
        feed_loop = self._feed_loop
        if feed_loop is None or feed_loop.is_closed():
            raise ConnectionClosedError
        got = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(leases.acquire(run_id), feed_loop)
        )
        if isinstance(got, Lease):
            with self._lock:
                previous = self._leased.pop(token, None)
                self._leased[token] = got
            if previous is not None:
                self._release_lease(previous)
        return got

    def _release(self, token: int) -> None:
        with self._lock:
            lease = self._leased.pop(token, None)
        if lease is not None:
            self._release_lease(lease)

    def _release_lease(self, lease: Lease) -> None:
        """Delete the lease on the feed thread, after the settlements sent before it
        (not awaited: the handler is done; an undeleted lease lapses by its TTL)."""
        feed_loop, leases = self._feed_loop, self.leases
        if feed_loop is None or leases is None:
            return
        with contextlib.suppress(RuntimeError):  # the feed loop has closed
            asyncio.run_coroutine_threadsafe(self._quietly(leases.release(lease)), feed_loop)

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as e:  # the lease lapses by its TTL
            log.warning("could not release a run lease", error=str(e))

    def _stop_beating(self, token: int) -> None:
        with self._lock:
            self._beating.pop(token, None)

    def _wake_feed(self) -> None:
        feed_loop, freed = self._feed_loop, self._freed
        if feed_loop is not None and freed is not None:
            with contextlib.suppress(RuntimeError):  # the feed loop has closed
                feed_loop.call_soon_threadsafe(freed.set)

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

    # -- the feed thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as e:  # reported to start(), or logged once running
            self._error = e
            if self._ready.is_set():
                log.error("task feed stopped; this worker takes no more tasks", error=str(e))
            self._ready.set()

    async def _feed(self) -> None:
        nc = await nats.connect(**nats_connect_kwargs(self._settings, f"{self._name}-feed"))
        try:
            subscription = await nc.jetstream().pull_subscribe(
                self._subject, durable=self._durable, stream=self._stream, config=self._config
            )
            await self._follow_ack_wait(subscription)
            await self._follow_filters(nc, subscription)
            if self._lease_ttl_s is not None:
                self.leases = await RunLeases.open(
                    nc.jetstream(),
                    self._settings.subject_prefix,
                    self._lease_ttl_s,
                    worker_holder(),
                    replicas=self._settings.stream_replicas,
                )
                # Renew well inside the TTL in force (the bucket's).
                self._heartbeat_s = min(self._heartbeat_s, max(0.1, self.leases.ttl_s / 4))
            self._feed_loop = asyncio.get_running_loop()
            self._freed = asyncio.Event()
            self._ready.set()
            beats = asyncio.create_task(self._beat(nc), name="agentledger-heartbeats")
            try:
                await self._pull(subscription)
                # Fetching has stopped; settlements still arrive until close().
                while not self._closing.is_set():
                    await asyncio.sleep(_STOP_POLL_S)
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        finally:
            self._feed_loop = None
            with contextlib.suppress(Exception):
                await nc.close()

    async def _follow_ack_wait(self, subscription: Any) -> None:
        """Beat often enough for the AckWait the durable consumer really has.

        A durable consumer keeps the config it was created with: a worker whose
        `AGENTLEDGER_ACK_WAIT_S` differs (a changed setting in a rolling deploy) would
        otherwise beat at its own pace, and JetStream would redeliver runs still being
        driven once the consumer's shorter AckWait passed."""
        try:
            info = await subscription.consumer_info()
        except Exception as e:  # keep the configured pace
            log.warning("could not read the consumer's AckWait", error=str(e))
            return
        actual = info.config.ack_wait
        if not actual or actual == self._config.ack_wait:
            return
        log.warning(
            "the durable consumer's AckWait differs from this worker's setting; heartbeats"
            " follow the consumer's",
            consumer=self._durable,
            consumer_ack_wait_s=actual,
            setting_ack_wait_s=self._config.ack_wait,
        )
        self._heartbeat_s = min(self._heartbeat_s, max(0.2, actual / 3))

    async def _follow_filters(self, nc: Any, subscription: Any) -> None:
        """Bring an existing durable consumer's subjects to this version's.

        A durable consumer keeps the subjects it was created with; a newer worker that
        takes one more subject (the graph workers' `<prefix>.tasks.workflow.cancel`)
        would otherwise never receive it. Other settings are left as the operator has
        them."""
        wanted = self._config.filter_subjects
        if not wanted:
            return
        try:
            info = await subscription.consumer_info()
            config = info.config
            have = config.filter_subjects or (
                [config.filter_subject] if config.filter_subject else []
            )
            if sorted(have) == sorted(wanted):
                return
            config.filter_subject = None
            config.filter_subjects = list(wanted)
            await nc.jetstream().add_consumer(self._stream, config=config)
            log.info("consumer subjects updated", consumer=self._durable, subjects=wanted)
        except Exception as e:  # the consumer keeps working on its old subjects
            log.warning(
                "could not update the consumer's subjects", consumer=self._durable, error=str(e)
            )

    async def _pull(self, subscription: Any) -> None:
        assert self._freed is not None and self._loop is not None
        while self._fetching.is_set():
            with self._lock:
                free = self._capacity - self._in_hand
            if free <= 0:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), FETCH_WAIT_S)
                continue
            try:
                # One message first: a batch pull that got its first message waits for
                # the rest of the batch until its deadline, so a task arriving at an
                # idle worker could sit for up to FETCH_WAIT_S (seen as 1 s steps in a
                # workflow whose children end one after the other).
                messages = await subscription.fetch(batch=1, timeout=FETCH_WAIT_S)
            except (NatsTimeoutError, TimeoutError):
                continue  # an empty stream
            except (ConnectionClosedError, NoServersError):
                await asyncio.sleep(0.5)  # reconnecting
                continue
            except Exception as e:  # never let one failed fetch end the worker
                log.warning("task fetch failed; retrying", error=str(e))
                await asyncio.sleep(1.0)
                continue
            if not self._hand_over(messages):
                return
            if free > 1:  # then what else is waiting, at once (a no-wait pull)
                try:
                    more = await subscription.fetch(
                        batch=min(free - 1, MAX_BATCH), timeout=DRAIN_WAIT_S
                    )
                except Exception:  # nothing more now (or a hiccup): the loop goes on
                    more = []
                if not self._hand_over(more):
                    return

    def _hand_over(self, messages: list[Msg]) -> bool:
        """Start beating for each message and spawn its handler on the worker's loop;
        False once that loop has closed (the messages are redelivered later)."""
        assert self._loop is not None
        for msg in messages:
            token = next(self._tokens)
            with self._lock:
                self._in_hand += 1
                if msg.reply:
                    self._beating[token] = msg.reply
            try:
                self._loop.call_soon_threadsafe(self._spawn, msg, token)
            except RuntimeError:  # the worker's loop has closed: redelivered later
                return False
        return True

    async def _beat(self, nc: Any) -> None:
        """`+WPI` every heartbeat interval for each message in hand, and a renewal of
        each run lease held."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            with self._lock:
                subjects = list(self._beating.values())
                leases = list(self._leased.values())
            for subject in subjects:
                try:
                    await nc.publish(subject, _IN_PROGRESS)
                except Exception as e:  # the next beat may get through
                    log.warning("heartbeat failed; AckWait may expire", error=str(e))
                    break
            if leases and self.leases is not None:
                await self._renew(self.leases, leases)

    async def _renew(self, leases: RunLeases, held: list[Lease]) -> None:
        for lease in held:
            try:
                await leases.renew(lease)
            except Exception as e:  # the next beat may get through; else it lapses
                log.warning("run lease renewal failed", run_id=lease.run_id, error=str(e))
                break


def worker_consumer(
    settings: Settings,
    *,
    name: str,
    subject: str,
    durable: str,
    handle: Handler,
    tracer: Tracer | None = None,
    extra_subjects: tuple[str, ...] = (),
) -> TaskConsumer:
    """A worker's consumer of `subject` (and `extra_subjects`) on the tasks stream: the
    shared durable `durable`, explicit acks, AckWait and max deliveries from settings,
    at most `worker_concurrency` tasks in hand, heartbeats every AckWait / 3."""
    return TaskConsumer(
        settings=settings,
        name=name,
        subject=subject,
        stream=settings.tasks_stream,
        durable=durable,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliveries,
            max_ack_pending=max(1000, settings.worker_concurrency * 4),
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=[subject, *extra_subjects] if extra_subjects else None,
        ),
        capacity=settings.worker_concurrency,
        handle=handle,
        heartbeat_s=max(0.5, settings.ack_wait_s / 3),
        tracer=tracer,
        lease_ttl_s=(settings.lease_ttl_s or settings.ack_wait_s) if settings.run_leases else None,
    )
