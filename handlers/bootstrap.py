"""The composition root: the one place that wires infra adapters into handlers.

`WorkerService` is a worker process's moving parts (broker, store, runner);
`ProjectorService` is a projector process's (projections, relay, query responder).
The CLI, the demo and the tests build them from `Settings` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nats
import structlog
from nats.aio.client import Client

from agentledger.handlers.catalog import Catalog, put_on_import_path
from agentledger.handlers.projector import Projector
from agentledger.handlers.queries import QueryService
from agentledger.handlers.relay import EventRelay
from agentledger.handlers.runner import AgentRunner
from agentledger.handlers.worker import TaskWorker
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.models import build_model
from agentledger.infra.nats import ensure_streams, make_broker, nats_connect_kwargs, nats_url
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore, view_store_for
from agentledger.projections.views import ALL_PROJECTIONS

__all__ = [
    "NatsAuthError",
    "NatsUnreachable",
    "ProjectorService",
    "WorkerService",
    "connect_nats",
    "load_catalog",
    "make_projector",
]

log = structlog.get_logger("agentledger")


class NatsAuthError(Exception):
    """The NATS server rejected the configured credentials."""


class NatsUnreachable(Exception):
    """No NATS server answered at the configured URL in time."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(
            f"cannot reach NATS at {url} within {seconds:g}s; start one with "
            "`agentledger nats` or set AGENTLEDGER_NATS_URL"
        )


async def connect_nats(settings: Settings, name: str) -> Client:
    """A plain nats-py connection from settings.

    nats-py retries a rejected CONNECT like a network error, forever when reconnects are
    unlimited; an authorization error is final, so it ends the attempt at once.
    """
    rejected = asyncio.Event()

    async def on_error(e: Exception) -> None:
        if "authorization" in str(e).lower():
            rejected.set()

    connecting = asyncio.create_task(
        nats.connect(**nats_connect_kwargs(settings, name), error_cb=on_error)
    )
    refused = asyncio.create_task(rejected.wait())
    await asyncio.wait(
        {connecting, refused},
        timeout=settings.nats_connect_timeout_s,
        return_when=asyncio.FIRST_COMPLETED,
    )
    refused.cancel()
    if connecting.done():
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    if rejected.is_set():
        raise NatsAuthError(
            f"NATS at {nats_url(settings)} rejected the credentials (authorization violation)"
        )
    raise NatsUnreachable(nats_url(settings), settings.nats_connect_timeout_s)


def load_catalog(settings: Settings) -> Catalog:
    """The catalog, with models named in it built by the model factory, and its
    references importable (`AGENTLEDGER_APP_DIR`, else the catalog's folder and the
    working directory, first on `sys.path`)."""
    if settings.app_dir is not None:
        put_on_import_path([settings.app_dir])
    else:
        put_on_import_path([Path(settings.catalog).parent, Path.cwd()])
    api_key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    return Catalog.load(
        settings.catalog,
        model_factory=lambda model, base_url: build_model(
            model, base_url=base_url, api_key=api_key
        ),
    )


def make_projector(settings: Settings, store: EventStore, views: ViewStore) -> Projector:
    return Projector(
        store=store,
        views=views,
        projections=[p(views.sealer) for p in ALL_PROJECTIONS],
        batch=settings.projection_batch,
        poll_s=settings.projection_poll_s,
    )


@dataclass(kw_only=True)
class WorkerService:
    """A task worker: FastStream broker + runner over the event store."""

    settings: Settings
    catalog: Catalog | None = None
    name: str = "agentledger-worker"
    store: AsyncEventStore | None = field(default=None, init=False)
    worker: TaskWorker | None = field(default=None, init=False)

    async def start(self) -> WorkerService:
        settings = self.settings
        catalog = self.catalog or load_catalog(settings)
        self.catalog = catalog
        # Every reference is imported before the worker takes a task: a bad one is one
        # clear start-up error, and no agent module is first imported on the event loop.
        await asyncio.to_thread(catalog.check)
        self.store = AsyncEventStore(
            await asyncio.to_thread(EventStore, settings),
            settings.store_threads,
            retry_s=settings.store_retry_s,
        )
        broker = make_broker(settings, self.name)
        runner = AgentRunner(store=self.store, catalog=catalog)
        self.worker = TaskWorker(
            settings=settings, broker=broker, store=self.store, catalog=catalog, runner=runner
        )
        try:
            await asyncio.wait_for(broker.connect(), settings.nats_connect_timeout_s)
        except TimeoutError:
            raise NatsUnreachable(nats_url(settings), settings.nats_connect_timeout_s) from None
        await ensure_streams(broker.connection.jetstream(), settings)
        await broker.start()
        log.info(
            "worker started",
            agents=catalog.names(),
            concurrency=settings.worker_concurrency,
            backend=settings.backend,
            prefix=settings.subject_prefix,
        )
        return self

    async def stop(self, grace_s: float | None = None) -> None:
        if self.worker is not None:
            await self.worker.drain(self.settings.shutdown_grace_s if grace_s is None else grace_s)
            await self.worker.broker.stop()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        log.info("worker stopped")


@dataclass(kw_only=True)
class ProjectorService:
    """Projections (in a thread), the event relay and the query responder."""

    settings: Settings
    relay: bool = True
    queries: bool = True
    store: EventStore | None = field(default=None, init=False)
    views: ViewStore | None = field(default=None, init=False)
    projector: Projector | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _relay_stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _relay_task: asyncio.Task[None] | None = field(default=None, init=False)
    _nc: Client | None = field(default=None, init=False)
    _query_service: QueryService | None = field(default=None, init=False)

    async def start(self) -> ProjectorService:
        settings = self.settings
        self.store = await asyncio.to_thread(EventStore, settings)
        self.views = await asyncio.to_thread(view_store_for, settings)
        self.projector = make_projector(settings, self.store, self.views)
        await asyncio.to_thread(self.projector.ensure)
        self._thread = threading.Thread(
            target=self.projector.run_forever, args=(self._stop,), name="projector", daemon=True
        )
        self._thread.start()
        if self.relay or self.queries:
            self._nc = await connect_nats(settings, "agentledger-projector")
            await ensure_streams(self._nc.jetstream(), settings)
        if self.relay:
            assert self._nc is not None
            views, names = self.views, [p.name for p in self.projector.projections]
            relay = EventRelay(
                store=self.store,
                views=views,
                nc=self._nc,
                prefix=settings.subject_prefix,
                horizon=lambda: views.lowest_tracking(names),
            )
            self._relay_task = asyncio.create_task(relay.run_forever(self._relay_stop))
        if self.queries:
            assert self._nc is not None
            self._query_service = QueryService(
                views=self.views, nc=self._nc, prefix=settings.subject_prefix
            )
            await self._query_service.start()
        log.info("projector started", backend=settings.backend, prefix=settings.subject_prefix)
        return self

    def wait_until(self, notification_id: int, timeout: float = 10.0) -> bool:
        assert self.projector is not None
        return self.projector.wait_until(notification_id, timeout)

    async def stop(self) -> None:
        self._stop.set()
        self._relay_stop.set()
        if self._relay_task is not None:
            await self._relay_task
        if self._query_service is not None:
            await self._query_service.stop()
        if self._nc is not None:
            await self._nc.drain()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        if self.views is not None:
            self.views.close()
        if self.store is not None:
            self.store.close()
        log.info("projector stopped")
