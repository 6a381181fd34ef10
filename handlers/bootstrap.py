"""The composition root: the one place that wires infra adapters into handlers.

`WorkerService` is a worker process's moving parts (broker, store, runner);
`ProjectorService` is a projector process's (projections, relay, query responder).
The CLI, the demo and the tests build them from `Settings` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from opentelemetry import trace

from agentledger.domain.memory.embedding import EmbeddingError
from agentledger.handlers.catalog import Catalog, CatalogError, put_on_import_path
from agentledger.handlers.dashboard.service import DashboardService
from agentledger.handlers.evaluation.worker import EvalWorker
from agentledger.handlers.graphs.runner import GraphRunner
from agentledger.handlers.graphs.worker import GraphWorker
from agentledger.handlers.memory import MemoryReader, embedder_for, memory_projection
from agentledger.handlers.memory.recall import MemoryRecaller, Recaller, UnavailableRecaller
from agentledger.handlers.monitoring.catalog import catalog_alert_rules
from agentledger.handlers.monitoring.monitor import AlertMonitor
from agentledger.handlers.operations.endpoints import (
    OperationsPortUnavailable,
    routes,
    start_operations,
)
from agentledger.handlers.operations.http import OperationsServer
from agentledger.handlers.operations.metrics import ProjectorMetrics, WorkerMetrics
from agentledger.handlers.operations.readiness import (
    OffLoopCheck,
    Readiness,
    projection_lag,
    projector_readiness,
    worker_readiness,
)
from agentledger.handlers.orchestration.dispatch import nats_dispatcher
from agentledger.handlers.projector import Projector
from agentledger.handlers.queries import QueryService
from agentledger.handlers.relay import EventRelay
from agentledger.handlers.routing.router import Router, latest_fit
from agentledger.handlers.routing.worker import RouteWorker
from agentledger.handlers.runner import AgentRunner
from agentledger.handlers.streaming.open import stream_opener
from agentledger.handlers.tools.middleware import shared_tool_state, use_tool_state
from agentledger.handlers.worker import TaskWorker
from agentledger.infra.event_store import AsyncEventStore, EventStore, StoreUnavailable
from agentledger.infra.models import build_model
from agentledger.infra.nats import (
    ensure_streams,
    make_broker,
    nats_connect_kwargs,
    nats_url,
    without_credentials,
)
from agentledger.infra.settings import Settings
from agentledger.infra.telemetry import tracer_provider_for
from agentledger.infra.tools.state import NatsToolState
from agentledger.infra.view_store import ViewStore, view_store_for
from agentledger.projections.memory import MemoryProjection
from agentledger.projections.views import ALL_PROJECTIONS

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import TracerProvider

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

T = TypeVar("T")


class NatsAuthError(Exception):
    """The NATS server rejected the configured credentials."""


class NatsUnreachable(Exception):
    """No NATS server answered at the configured URL in time."""

    def __init__(self, url: str, seconds: float, how: str = "timeout") -> None:
        why = "connection refused" if how == "refused" else f"no answer within {seconds:g}s"
        super().__init__(
            f"cannot reach NATS at {without_credentials(url)} ({why}); start one with"
            " `agentledger nats` or set AGENTLEDGER_NATS_URL"
        )


async def connect_nats(settings: Settings, name: str) -> Client:
    """A plain nats-py connection from settings.

    nats-py retries a rejected CONNECT like a network error, forever when reconnects are
    unlimited; an authorization error is final, so it ends the attempt at once, and so
    does a refused connection (nothing listens there: waiting would only delay the one
    line that says so). Otherwise it gives up after `nats_connect_timeout_s`.
    """
    rejected = asyncio.Event()
    refused = asyncio.Event()

    async def on_error(e: Exception) -> None:
        if "authorization" in str(e).lower():
            rejected.set()
        elif isinstance(e, ConnectionRefusedError):
            refused.set()

    connecting = asyncio.create_task(
        nats.connect(**nats_connect_kwargs(settings, name), error_cb=on_error)
    )
    failed = asyncio.create_task(_first_of(rejected, refused))
    await asyncio.wait(
        {connecting, failed},
        timeout=settings.nats_connect_timeout_s,
        return_when=asyncio.FIRST_COMPLETED,
    )
    failed.cancel()
    if connecting.done() and connecting.exception() is None:
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    url = without_credentials(nats_url(settings))
    if rejected.is_set():
        raise NatsAuthError(f"NATS at {url} rejected the credentials (authorization violation)")
    if refused.is_set():
        raise NatsUnreachable(nats_url(settings), settings.nats_connect_timeout_s, "refused")
    raise NatsUnreachable(nats_url(settings), settings.nats_connect_timeout_s)


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _open_when_reachable(what: str, open_store: Callable[[], T]) -> T:
    """Open a store, waiting (with backoff, logged) while its database is unreachable:
    a service started before its database, or during an outage, comes up when the
    database does instead of exiting. (CLI commands fail fast instead: one line.)"""
    delay = 0.5
    while True:
        try:
            return await asyncio.to_thread(open_store)
        except StoreUnavailable as e:
            log.warning(f"{what} unreachable; retrying", error=str(e), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


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


def make_router(settings: Settings, catalog: Catalog, store: EventStore) -> Router:
    """The catalog's router on the configured embedder, with the latest fit recorded for
    it, and its example vectors cached under the data folder."""
    embedder = embedder_for(settings)
    fit = latest_fit(store, settings.subject_prefix, catalog.router, embedder)
    return Router(
        catalog.router,
        embedder,
        fit=fit,
        cache_folder=settings.data_dir / "cache" / "route-vectors",
    )


def make_memory_projector(settings: Settings, store: EventStore, views: ViewStore) -> Projector:
    """The memory view's own projector: embedding never holds back the other views.
    Batches are smaller than theirs (embedding is the slow part of a pass)."""
    return Projector(
        store=store,
        views=views,
        projections=[memory_projection(settings, views)],
        batch=min(settings.projection_batch, 256),
        poll_s=settings.projection_poll_s,
    )


@dataclass(kw_only=True)
class WorkerService:
    """A task worker: FastStream broker + runner over the event store."""

    settings: Settings
    catalog: Catalog | None = None
    name: str = "agentledger-worker"
    tracer_provider: TracerProvider | None = None
    """Where the worker's traces go (tests pass their own). Default: a provider built
    from settings when AGENTLEDGER_OTEL_ENABLED is set, else none: no tracing."""
    store: AsyncEventStore | None = field(default=None, init=False)
    worker: TaskWorker | None = field(default=None, init=False)
    graph_worker: GraphWorker | None = field(default=None, init=False)
    route_worker: RouteWorker | None = field(default=None, init=False)
    eval_worker: EvalWorker | None = field(default=None, init=False)
    _own_tracer_provider: SdkTracerProvider | None = field(default=None, init=False)
    metrics: WorkerMetrics | None = field(default=None, init=False)
    operations: OperationsServer | None = field(default=None, init=False)
    """The /healthz, /readyz, /metrics server (when AGENTLEDGER_HTTP_PORT is set)."""
    _store_check: OffLoopCheck[int] | None = field(default=None, init=False)
    _memory_views: ViewStore | None = field(default=None, init=False)
    """The view store recall searches (only when an agent of the catalog recalls)."""
    _tool_state: NatsToolState | None = field(default=None, init=False)
    """The tool middleware's shared cache and rate limits (set for the process)."""

    async def start(self) -> WorkerService:
        settings = self.settings
        tracer_provider = self.tracer_provider or self._build_tracer_provider()
        catalog = self.catalog or load_catalog(settings)
        self.catalog = catalog
        # Every reference is imported before the worker takes a task: a bad one is one
        # clear start-up error, and no agent module is first imported on the event loop.
        await asyncio.to_thread(catalog.check)
        self.store = AsyncEventStore(
            await _open_when_reachable("event store", lambda: EventStore(settings)),
            settings.store_threads,
            retry_s=settings.store_retry_s,
        )
        broker = make_broker(settings, self.name)
        runner = AgentRunner(
            store=self.store,
            catalog=catalog,
            tracer_provider=tracer_provider,
            recaller=await self._recaller(catalog),
            streams=stream_opener(lambda: broker.connection, settings),
        )
        self.metrics = WorkerMetrics(catalog.names())
        self.worker = TaskWorker(
            settings=settings,
            broker=broker,
            store=self.store,
            catalog=catalog,
            runner=runner,
            metrics=self.metrics,
        )
        try:
            await asyncio.wait_for(broker.connect(), settings.nats_connect_timeout_s)
        except TimeoutError:
            raise NatsUnreachable(nats_url(settings), settings.nats_connect_timeout_s) from None
        await ensure_streams(broker.connection.jetstream(), settings)
        # The tool middleware's cache and rate limits: shared by every worker (NATS KV).
        self._tool_state = NatsToolState(
            broker.connection.jetstream(),
            settings.subject_prefix,
            replicas=settings.stream_replicas,
        )
        use_tool_state(self._tool_state)
        await broker.start()
        await self.worker.start(tracer_provider)
        self.graph_worker = GraphWorker(
            settings=settings,
            broker=broker,
            store=self.store,
            runner=GraphRunner(
                store=self.store,
                catalog=catalog,
                agents=runner,
                dispatcher=nats_dispatcher(broker, settings.subject_prefix),
            ),
        )
        await self.graph_worker.start()
        if catalog.router.routes:
            router = await asyncio.to_thread(make_router, settings, catalog, self.store.sync)
            self.route_worker = RouteWorker(
                settings=settings,
                broker=broker,
                store=self.store,
                router=router,
                agents=runner,
                graphs=self.graph_worker.runner,
            )
            await self.route_worker.start()
        # Always: an evaluation of a dataset this catalog lacks is answered (rejected).
        self.eval_worker = EvalWorker(
            settings=settings, broker=broker, store=self.store, catalog=catalog
        )
        await self.eval_worker.start()
        log.info(
            "worker started",
            agents=catalog.names(),
            graphs=sorted(catalog.graphs),
            concurrency=settings.worker_concurrency,
            backend=settings.backend,
            prefix=settings.subject_prefix,
            tracing=tracer_provider is not None,
        )
        try:
            await self._serve_operations()
        except OperationsPortUnavailable:
            await self.stop(grace_s=0)
            raise
        return self

    async def _serve_operations(self) -> None:
        settings = self.settings
        if settings.http_port is None:
            return
        assert self.store is not None and self.worker is not None and self.metrics is not None
        worker = self.worker
        # Held here: the broker's `connection` raises once the broker has stopped.
        nc = worker.broker.connection
        store_check = OffLoopCheck(self.store.sync.max_notification_id, name="worker-readiness")
        self._store_check = store_check

        async def readiness() -> Readiness:
            return await worker_readiness(
                nc=nc,
                stream=settings.tasks_stream,
                durable=worker.durable,
                store_check=store_check,
                draining=worker.draining,
            )

        endpoints = routes(readiness=readiness, registry=self.metrics.registry)
        self.operations = await start_operations(settings, endpoints, "worker")

    async def _stop_operations(self) -> None:
        if self.operations is not None:
            await self.operations.stop()
            self.operations = None
        if self._store_check is not None:
            self._store_check.close()
            self._store_check = None

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        # Both workers drain at once, within the one grace period.
        workers = [
            w
            for w in (self.eval_worker, self.route_worker, self.graph_worker, self.worker)
            if w is not None
        ]
        await asyncio.gather(*(w.drain(grace) for w in workers))
        if self.eval_worker is not None:
            with contextlib.suppress(Exception):
                await self.eval_worker.stop()
            self.eval_worker = None
        if self.route_worker is not None:
            with contextlib.suppress(Exception):
                await self.route_worker.stop()
            self.route_worker = None
        if self.graph_worker is not None:
            with contextlib.suppress(Exception):
                await self.graph_worker.stop()
            self.graph_worker = None
        if self.worker is not None:
            with contextlib.suppress(Exception):  # its subscription goes with the connection
                await self.worker.stop()
            try:
                await self.worker.broker.stop()
            except NatsError as e:
                # Stopping while NATS is unreachable (reconnecting) must still stop: what
                # this worker held is redelivered to another once its AckWait passes.
                log.warning("stopped without draining the NATS connection", error=str(e))
                connection = self.worker.broker.connection if self.worker.broker else None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
        await self._stop_operations()
        if self._tool_state is not None and shared_tool_state() is self._tool_state:
            use_tool_state(None)  # its connection is closed
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        if self._memory_views is not None:
            await asyncio.to_thread(self._memory_views.close)
            self._memory_views = None
        if self._own_tracer_provider is not None:
            # Flushes the spans not exported yet (a blocking HTTP call).
            await asyncio.to_thread(self._own_tracer_provider.shutdown)
            self._own_tracer_provider = None
        log.info("worker stopped")

    async def _recaller(self, catalog: Catalog) -> Recaller | None:
        """A memory recaller when some agent of the catalog recalls (its embedder is
        loaded before the first task), else None."""
        if not any(entry.recall is not None for entry in catalog.entries.values()):
            return None
        settings = self.settings
        views = await _open_when_reachable("view store", lambda: view_store_for(settings))
        self._memory_views = views
        try:
            reader = await asyncio.to_thread(MemoryReader.for_settings, settings, views)
        except EmbeddingError as e:
            # Runs go on; each records that its recall failed and why.
            log.error(
                "recall unavailable: the memory embedder cannot load", alert=True, error=str(e)
            )
            return UnavailableRecaller(str(e))
        return MemoryRecaller(reader)

    def _build_tracer_provider(self) -> SdkTracerProvider | None:
        """The provider AGENTLEDGER_OTEL_ENABLED asks for (None when off), installed as
        the global one unless one is set already, so spans of the agents' own code
        (a tool's, an instrumented HTTP client's) land in the same traces."""
        provider = tracer_provider_for(self.settings, self.name)
        if provider is not None:
            self._own_tracer_provider = provider
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(provider)
        return provider


_SUPERVISE_S = 0.5
"""How often `ProjectorService` looks whether its projector thread and relay task run."""
_RESTART_MAX_S = 30.0
_STEADY_S = 60.0
"""A part running this long since its last restart restarts without delay next time."""


@dataclass(kw_only=True)
class _Restarts:
    """Backoff of one supervised part: restarted at once, then after 0.5 s, 1 s, 2 s, ...
    up to 30 s; at once again after it ran `_STEADY_S` without ending."""

    count: int = 0
    started_at: float = 0.0

    def delay(self, now: float) -> float:
        if now - self.started_at > _STEADY_S:
            self.count = 0
        self.count += 1
        return 0.0 if self.count == 1 else min(_RESTART_MAX_S, 0.5 * 2 ** (self.count - 2))


@dataclass(kw_only=True)
class ProjectorService:
    """Projections (in a thread), the event relay and the query responder.

    A supervisor task restarts the projector thread or the relay task if either ends
    while the service runs (neither should: both retry their own errors), with an error
    logged (`alert=True`), `agentledger_projector_restarts` counted, and a backoff.
    """

    settings: Settings
    relay: bool = True
    queries: bool = True
    store: EventStore | None = field(default=None, init=False)
    views: ViewStore | None = field(default=None, init=False)
    projector: Projector | None = field(default=None, init=False)
    event_relay: EventRelay | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    memory_projector: Projector | None = field(default=None, init=False)
    """The memory view's projector (AGENTLEDGER_MEMORY_ENABLED), in a thread of its own."""
    _memory_thread: threading.Thread | None = field(default=None, init=False)
    memory: MemoryReader | None = field(default=None, init=False)
    """Searches the memory view (None until its projector runs)."""
    _memory_retry: asyncio.Task[None] | None = field(default=None, init=False)
    _relay_stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _relay_task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _supervisor: asyncio.Task[None] | None = field(default=None, init=False)
    _restarts: dict[str, _Restarts] = field(default_factory=dict, init=False)
    _nc: Client | None = field(default=None, init=False)
    _query_service: QueryService | None = field(default=None, init=False)
    metrics: ProjectorMetrics = field(default_factory=ProjectorMetrics, init=False)
    operations: OperationsServer | None = field(default=None, init=False)
    """The /healthz, /readyz, /metrics server (when AGENTLEDGER_HTTP_PORT is set)."""
    _lag_check: OffLoopCheck[int] | None = field(default=None, init=False)
    alert_monitor: AlertMonitor | None = field(default=None, init=False)
    """Checks the alert rules (None: no rules)."""
    _alerts_task: asyncio.Task[None] | None = field(default=None, init=False)
    dashboard: DashboardService | None = field(default=None, init=False)
    """The web dashboard (when AGENTLEDGER_DASHBOARD_PORT is set)."""

    async def start(self) -> ProjectorService:
        settings = self.settings
        if settings.dashboard_port is not None:
            DashboardService(settings=settings).check()  # before anything starts
        self.store = await _open_when_reachable("event store", lambda: EventStore(settings))
        self.views = await _open_when_reachable("view store", lambda: view_store_for(settings))
        self.projector = make_projector(settings, self.store, self.views)
        self.projector.on_poison = self.metrics.poison_event
        await asyncio.to_thread(self.projector.ensure)
        self._start_projector()
        if settings.memory_enabled:
            try:
                await self._start_memory()
            except EmbeddingError as e:
                log.error(
                    "the memory view cannot start (its embedder); retrying in the background",
                    alert=True,
                    error=str(e),
                )
                self._memory_retry = asyncio.create_task(self._retry_memory())
        if self.relay or self.queries:
            self._nc = await connect_nats(settings, "agentledger-projector")
            await ensure_streams(self._nc.jetstream(), settings)
        if self.relay:
            assert self._nc is not None
            views, names = self.views, [p.name for p in self.projector.projections]
            self.event_relay = EventRelay(
                store=self.store,
                views=views,
                nc=self._nc,
                prefix=settings.subject_prefix,
                horizon=lambda: views.lowest_tracking(names),
            )
            self.event_relay.on_poison = self.metrics.poison_event
            self._start_relay()
        self._supervisor = asyncio.create_task(self._supervise())
        self._start_alerts()
        if self.queries:
            assert self._nc is not None
            self._query_service = QueryService(
                views=self.views, nc=self._nc, prefix=settings.subject_prefix, memory=self.memory
            )
            await self._query_service.start()
        log.info("projector started", backend=settings.backend, prefix=settings.subject_prefix)
        try:
            await self._serve_operations()
            if settings.dashboard_port is not None:
                self.dashboard = await DashboardService(
                    settings=settings, store=self.store, views=self.views
                ).start()
        except Exception:
            await self.stop()
            raise
        return self

    def _start_alerts(self) -> None:
        """Check the alert rules (settings and the catalog's `[alerts.*]`) while the
        projector runs; none: no monitor."""
        settings = self.settings
        rules = list(settings.alert_rules)
        known: set[str] | None = None
        try:
            from_catalog, known = catalog_alert_rules(Path(settings.catalog))
            rules += from_catalog
        except CatalogError as e:
            if not rules:
                return
            log.warning("alert rules: the catalog could not be read", error=str(e))
        if not rules:
            return
        assert self.views is not None and self.store is not None
        self.alert_monitor = AlertMonitor(
            rules=rules,
            views=self.views,
            store=self.store,
            nc=self._nc,
            prefix=settings.subject_prefix,
            interval_s=settings.alert_interval_s,
            on_change=self.metrics.alert_changed,
            known_agents=known,
        )
        self._alerts_task = asyncio.create_task(self.alert_monitor.run(self._stopping))
        log.info("alert rules checked", rules=[r.name for r in rules])

    async def _serve_operations(self) -> None:
        if self.settings.http_port is None:
            return
        store, views, projector = self.store, self.views, self.projector
        assert store is not None and views is not None and projector is not None
        names = [p.name for p in projector.projections]
        lag_check = OffLoopCheck(
            lambda: projection_lag(store, views, names), name="projector-readiness"
        )
        self._lag_check = lag_check
        nc, gauge = self._nc, self.metrics.projection_lag

        async def lag() -> int | None:
            behind = await lag_check()
            if behind is not None:
                gauge.set(behind)
            return behind

        async def readiness() -> Readiness:
            return await projector_readiness(nc=nc, lag=lag)

        async def refresh() -> None:
            await lag()

        endpoints = routes(readiness=readiness, registry=self.metrics.registry, refresh=refresh)
        self.operations = await start_operations(self.settings, endpoints, "projector")

    def _start_projector(self) -> None:
        self._restarts.setdefault("projector", _Restarts()).started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run_projector, name="projector", daemon=True)
        self._thread.start()

    def _run_projector(self) -> None:
        assert self.projector is not None
        try:
            self.projector.run_forever(self._stop)
        except BaseException:  # the supervisor restarts the thread; say why it ended
            log.exception("the projector thread failed")

    async def _start_memory(self) -> None:
        """Build the memory projector (loading its embedder), ensure its view, start its
        thread, and answer memory queries from then on."""
        settings, store, views = self.settings, self.store, self.views
        assert store is not None and views is not None
        projector = await asyncio.to_thread(make_memory_projector, settings, store, views)
        projector.on_poison = self.metrics.poison_event
        await asyncio.to_thread(projector.ensure)
        self.memory_projector = projector
        self._start_memory_projector()
        projection = projector.projections[0]
        assert isinstance(projection, MemoryProjection)
        self.memory = MemoryReader(views, projection, settings.hnsw_ef_search)
        if self._query_service is not None:
            self._query_service.memory = self.memory

    async def _retry_memory(self) -> None:
        delay = 1.0
        while not await _stopped_within(self._stopping, delay):
            try:
                await self._start_memory()
            except EmbeddingError as e:
                delay = min(delay * 2, _RESTART_MAX_S)
                log.warning("the memory view still cannot start", error=str(e), retry_in_s=delay)
                continue
            log.info("the memory view started")
            return

    def _start_memory_projector(self) -> None:
        self._restarts.setdefault("memory", _Restarts()).started_at = time.monotonic()
        self._memory_thread = threading.Thread(
            target=self._run_memory_projector, name="memory-projector", daemon=True
        )
        self._memory_thread.start()

    def _run_memory_projector(self) -> None:
        assert self.memory_projector is not None
        try:
            self.memory_projector.run_forever(self._stop)
        except BaseException:  # the supervisor restarts the thread; say why it ended
            log.exception("the memory projector thread failed")

    def _start_relay(self) -> None:
        assert self.event_relay is not None
        self._restarts.setdefault("relay", _Restarts()).started_at = time.monotonic()
        self._relay_task = asyncio.create_task(self.event_relay.run_forever(self._relay_stop))

    async def _supervise(self) -> None:
        """Restart the projector thread or the relay task when one has ended while the
        service runs (see the class docstring)."""
        while not await _stopped_within(self._stopping, _SUPERVISE_S):
            if self._thread is not None and not self._thread.is_alive():
                if not await self._restart("projector", None):
                    return
                self._start_projector()
            if self._memory_thread is not None and not self._memory_thread.is_alive():
                if not await self._restart("memory", None):
                    return
                self._start_memory_projector()
            task = self._relay_task
            if task is not None and task.done():
                error = None if task.cancelled() else task.exception()
                if not await self._restart("relay", error):
                    return
                self._start_relay()

    async def _restart(self, part: str, error: BaseException | None) -> bool:
        """Log and count the end of `part`, wait its backoff; False if the service stops
        meanwhile."""
        delay = self._restarts[part].delay(time.monotonic())
        what = {"relay": "event relay", "memory": "memory projector thread"}
        log.error(
            f"the {what.get(part, 'projector thread')} ended unexpectedly; restarting it",
            alert=True,
            part=part,
            error=None if error is None else repr(error),
            delay_s=delay,
        )
        self.metrics.restarted(part)
        return not await _stopped_within(self._stopping, delay)

    def wait_until(self, notification_id: int, timeout: float = 10.0) -> bool:
        """Whether every view (the memory view too) has folded `notification_id` within
        `timeout` seconds."""
        assert self.projector is not None
        deadline = time.monotonic() + timeout
        if not self.projector.wait_until(notification_id, timeout):
            return False
        if self.memory_projector is None:
            return True
        return self.memory_projector.wait_until(
            notification_id, max(0.0, deadline - time.monotonic())
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None
        if self._supervisor is not None:
            await self._supervisor
        if self._alerts_task is not None:
            await asyncio.wait([self._alerts_task])
        if self.operations is not None:
            await self.operations.stop()
            self.operations = None
        if self._lag_check is not None:
            self._lag_check.close()
            self._lag_check = None
        if self._memory_retry is not None:
            await asyncio.wait([self._memory_retry])
        self._stop.set()
        self._relay_stop.set()
        if self._relay_task is not None:
            await asyncio.wait([self._relay_task])
            if not self._relay_task.cancelled() and self._relay_task.exception() is not None:
                log.error("the event relay had failed", error=repr(self._relay_task.exception()))
        if self._query_service is not None:
            await self._query_service.stop()
        if self._nc is not None:
            try:
                await self._nc.drain()
            except NatsError as e:  # stopping while NATS is unreachable still stops
                log.warning("stopped without draining the NATS connection", error=str(e))
                with contextlib.suppress(Exception):
                    await self._nc.close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        if self._memory_thread is not None:
            await asyncio.to_thread(self._memory_thread.join, 10)
        if self.views is not None:
            self.views.close()
        if self.store is not None:
            self.store.close()
        log.info("projector stopped")


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stopping`; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return stopping.is_set()
