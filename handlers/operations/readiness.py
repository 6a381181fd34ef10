"""Readiness of a worker or a projector: is NATS connected, does the store answer, how
much work is waiting.

Store checks block (eventsourcing and the view store are synchronous), so they run in a
thread of their own, one at a time and with a timeout: concurrent probes share the
check in flight, and a store that hangs makes the process unready instead of piling up
threads or blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from nats.aio.client import Client

from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import ViewStore

__all__ = [
    "PROBE_TIMEOUT_S",
    "OffLoopCheck",
    "Readiness",
    "projection_lag",
    "projector_readiness",
    "worker_readiness",
]

log = structlog.get_logger("agentledger.operations")

T = TypeVar("T")

PROBE_TIMEOUT_S = 2.0
"""A dependency that does not answer within this long counts as down."""


@dataclass(frozen=True, kw_only=True)
class Readiness:
    """The `/readyz` answer."""

    ready: bool
    nats: bool
    """The process's NATS connection is connected (True for a projector that uses none)."""
    store: bool
    """A cheap query of the event store (and, for a projector, the views) answered."""
    consumer_pending: int | None = None
    """Worker: tasks in its durable consumer not yet delivered (None if unknown)."""
    projection_lag: int | None = None
    """Projector: notifications the furthest-behind projection has yet to apply."""
    draining: bool = False
    """Worker: shutting down (takes no new tasks), hence not ready."""


class OffLoopCheck(Generic[T]):
    """A blocking check run in one dedicated thread, with a timeout, single-flight.

    One long-lived thread (rather than a thread per call) keeps thread-local database
    connections (the SQLite view store's) to one per process.
    """

    def __init__(self, check: Callable[[], T], *, name: str, timeout_s: float = PROBE_TIMEOUT_S):
        self._check = check
        self._name = name
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T | None:
        """The check's result; None if it failed or did not answer in time."""
        if self._running is None or self._running.done():
            loop = asyncio.get_running_loop()
            self._running = loop.run_in_executor(self._executor, self._check)
            # Retrieved here so a check that ends after everyone stopped waiting for it
            # never leaves an "exception was never retrieved" behind.
            self._running.add_done_callback(_consume)
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self._timeout_s)
        except TimeoutError:
            log.warning("readiness check timed out", check=self._name, timeout_s=self._timeout_s)
        except Exception as e:
            log.warning("readiness check failed", check=self._name, error=str(e))
        return None

    def close(self) -> None:
        # A check stuck in the database is not waited for.
        self._executor.shutdown(wait=False, cancel_futures=True)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def projection_lag(store: EventStore, views: ViewStore, names: Sequence[str]) -> int:
    """Notifications in the log that the furthest-behind of `names` has not applied."""
    return max(0, store.max_notification_id() - views.lowest_tracking(names))


async def worker_readiness(
    *,
    nc: Client,
    stream: str,
    durable: str,
    store_check: OffLoopCheck[int],
    draining: bool,
) -> Readiness:
    """A worker is ready when NATS is connected, the store answers and it is not draining."""

    async def pending() -> int | None:
        if not nc.is_connected:
            return None
        with contextlib.suppress(Exception):
            info = await nc.jetstream().consumer_info(stream, durable, timeout=PROBE_TIMEOUT_S)
            count: int | None = info.num_pending
            return count
        return None

    store_head, consumer_pending = await asyncio.gather(store_check(), pending())
    nats_ok = nc.is_connected
    store_ok = store_head is not None
    return Readiness(
        ready=nats_ok and store_ok and not draining,
        nats=nats_ok,
        store=store_ok,
        consumer_pending=consumer_pending,
        draining=draining,
    )


async def projector_readiness(
    *, nc: Client | None, lag: Callable[[], Awaitable[int | None]]
) -> Readiness:
    """A projector is ready when its NATS connection (if it uses one) is connected and
    the event log and the views answer (`lag` returns a number)."""
    behind = await lag()
    nats_ok = nc is None or nc.is_connected
    return Readiness(
        ready=nats_ok and behind is not None,
        nats=nats_ok,
        store=behind is not None,
        projection_lag=behind,
    )
