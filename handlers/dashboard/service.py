"""`DashboardService`: the web dashboard's moving parts (its NATS connection and live
feed, its reads, its HTTP server), started by `agentledger dashboard` on its own or by
`agentledger project` beside the projections (`AGENTLEDGER_DASHBOARD_PORT`).

Run by the projector it reads that process's event store and view store; on its own it
opens them from settings (and makes the views' tables if the store has none yet, so a
fresh store shows an empty board). Either way its live updates come over NATS from the
event relay, which only `agentledger project` runs: a dashboard with no projector
running shows what the views held when it started, and nothing new.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import quote

import structlog
from nats.aio.client import Client

from agentledger.handlers.dashboard.app import DashboardApp, load_static
from agentledger.handlers.dashboard.auth import Gate, check_listen_config
from agentledger.handlers.dashboard.feed import LiveFeed
from agentledger.handlers.dashboard.http import DashboardHttp
from agentledger.handlers.dashboard.reads import DashboardReads
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore, view_store_for
from agentledger.projections.views import ALL_PROJECTIONS

__all__ = ["DEFAULT_PORT", "DashboardPortUnavailable", "DashboardService"]

log = structlog.get_logger("agentledger.dashboard")

DEFAULT_PORT = 8765
"""`agentledger dashboard`'s port when neither --port nor AGENTLEDGER_DASHBOARD_PORT says."""


class DashboardPortUnavailable(Exception):
    """The dashboard cannot listen on the configured address."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(
            f"cannot serve the dashboard on {host}:{port} ({error.strerror or error}); choose"
            " another port (--port or AGENTLEDGER_DASHBOARD_PORT)"
        )


@dataclass(kw_only=True)
class DashboardService:
    settings: Settings
    store: EventStore | None = None
    """The event store to read (None: opened from settings, and closed by `stop`)."""
    views: ViewStore | None = None
    """The view store to read (None: opened from settings, and closed by `stop`)."""
    host: str | None = None
    """Overrides AGENTLEDGER_DASHBOARD_HOST."""
    port: int | None = None
    """Overrides AGENTLEDGER_DASHBOARD_PORT (else `DEFAULT_PORT`)."""
    token: str | None = None
    """Overrides AGENTLEDGER_DASHBOARD_TOKEN."""
    feed: LiveFeed | None = field(default=None, init=False)
    app: DashboardApp | None = field(default=None, init=False)
    http: DashboardHttp | None = field(default=None, init=False)
    _nc: Client | None = field(default=None, init=False)
    _owned: list[EventStore | ViewStore] = field(default_factory=list, init=False)

    @property
    def listen_host(self) -> str:
        return self.host or self.settings.dashboard_host

    @property
    def listen_port(self) -> int:
        if self.port is not None:
            return self.port
        port = self.settings.dashboard_port
        return DEFAULT_PORT if port is None else port

    @property
    def access_token(self) -> str | None:
        if self.token is not None:
            return self.token
        token = self.settings.dashboard_token
        return None if token is None else token.get_secret_value()

    def check(self) -> None:
        """Refuse a configuration that would expose the dashboard (see `auth`)."""
        check_listen_config(self.listen_host, self.access_token)

    async def start(self) -> DashboardService:
        from agentledger.handlers.bootstrap import connect_nats

        self.check()
        settings = self.settings
        try:
            if self.store is None:
                self.store = await asyncio.to_thread(EventStore, settings)
                self._owned.append(self.store)
            if self.views is None:
                self.views = await asyncio.to_thread(view_store_for, settings)
                self._owned.append(self.views)
                for projection in ALL_PROJECTIONS:
                    await asyncio.to_thread(self.views.ensure, projection)
            self._nc = await connect_nats(settings, "agentledger-dashboard")
            self.feed = await LiveFeed(
                views=self.views, nc=self._nc, prefix=settings.subject_prefix
            ).start()
            self.app = DashboardApp(
                gate=Gate(token=self.access_token),
                feed=self.feed,
                reads=DashboardReads(settings=settings, store=self.store, views=self.views),
                static=await asyncio.to_thread(load_static),  # gzips the bundle: off the loop
            )
            host, port = self.listen_host, self.listen_port
            try:
                self.http = await DashboardHttp(self.app.handle, host=host, port=port).start()
            except OSError as e:
                raise DashboardPortUnavailable(host, port, e) from None
        except BaseException:
            await self.stop()
            raise
        log.info("dashboard", url=self.http.url, auth="token" if self.access_token else "loopback")
        return self

    @property
    def url(self) -> str:
        """Where the dashboard answers (a wildcard address shown as localhost)."""
        assert self.http is not None
        host = self.http.host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.http.port}/"

    @property
    def login_url(self) -> str:
        """`url`, with the token query that sets the page's cookie (when a token is set)."""
        token = self.access_token
        return self.url if token is None else f"{self.url}?token={quote(token, safe='')}"

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        if self._nc is not None:
            try:
                await self._nc.drain()
            except Exception as e:  # stopping while NATS is away still stops
                log.warning("dashboard stopped without draining NATS", error=str(e))
            self._nc = None
        for owned in reversed(self._owned):
            await asyncio.to_thread(owned.close)
        self._owned.clear()
