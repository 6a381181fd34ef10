"""`AlertMonitor`: checks the alert rules against each agent's rolling windows every
`interval_s`, and raises or clears alerts.

A change is recorded first (`Alert` events, with optimistic concurrency: two monitors
never both record it), then published on `<prefix>.alerts.<agent>.<metric>` (an
`AlertMessage`) and shown in the Prometheus gauges `agentledger_alert_active` and
`agentledger_alert_value`. A check that fails (the views or the store out of reach) is
logged and tried again at the next interval: the monitor never stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from nats.aio.client import Client

from agentledger.domain.monitoring.alert import Alert, alert_id
from agentledger.domain.monitoring.rules import (
    WINDOWS_S,
    AlertMessage,
    AlertRule,
    WindowStats,
    decide,
)
from agentledger.domain.subjects import alert_subject
from agentledger.infra.event_store import ConcurrencyConflict, EventStore
from agentledger.infra.view_store import ViewStore
from agentledger.projections.base import iso
from agentledger.projections.monitoring import window_stats

__all__ = ["UNKNOWN_AGENT", "AlertMonitor"]

UNKNOWN_AGENT = "_unknown"
"""Where the runs and rejections of agents the catalog does not know are counted."""

log = structlog.get_logger("agentledger.alerts")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AlertMonitor:
    def __init__(
        self,
        *,
        rules: Sequence[AlertRule],
        views: ViewStore,
        store: EventStore,
        nc: Client | None,
        prefix: str,
        interval_s: float = 1.0,
        clock: Callable[[], datetime] = _utcnow,
        on_change: Callable[[AlertMessage], None] | None = None,
        known_agents: set[str] | None = None,
    ) -> None:
        """`known_agents` (the catalog's): the runs and rejections of any other agent
        name count as the agent `_unknown`, so a client that makes up agent names
        cannot make up alerts, subjects or metric labels without end."""
        self.rules = list(rules)
        self._views = views
        self._store = store
        self._nc = nc
        self._prefix = prefix
        self.interval_s = interval_s
        self._clock = clock
        self._on_change = on_change
        self._known = known_agents
        self._active: dict[tuple[str, str], bool] = {}
        """What this monitor knows of each alert (loaded from the store when first seen)."""

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("alert check failed; trying again")
            try:
                await asyncio.wait_for(stopping.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def check(self) -> list[AlertMessage]:
        """One pass over every rule; returns the changes it made."""
        now = self._clock()
        windows = {rule.window for rule in self.rules}
        stats = {
            window: await asyncio.to_thread(self._read, now - timedelta(seconds=WINDOWS_S[window]))
            for window in windows
        }
        changes = []
        for rule in self.rules:
            seen = stats[rule.window]
            agents = {a for a in seen if rule.applies_to(a)}
            agents |= {a for (r, a), on in self._active.items() if r == rule.name and on}
            if rule.agent != "*":
                agents.add(rule.agent)
            for agent in sorted(agents):
                window = seen.get(agent)
                value, samples = (
                    (None, 0)
                    if window is None
                    else window.value(rule.metric, WINDOWS_S[rule.window])
                )
                active = await self._is_active(rule, agent)
                verdict = decide(rule, value, samples, active)
                if verdict is not None:
                    change = await self._record(rule, agent, verdict, value, samples, now)
                    if change is not None:
                        changes.append(change)
        return changes

    def _read(self, since: datetime) -> dict[str, WindowStats]:
        with self._views.read() as cursor:
            found = window_stats(cursor, iso(since))
        merged: dict[str, WindowStats] = {}
        for agent, stats in found.items():
            name = agent if self._known is None or agent in self._known else UNKNOWN_AGENT
            merged[name] = merged[name].plus(stats) if name in merged else stats
        return merged

    async def _is_active(self, rule: AlertRule, agent: str) -> bool:
        key = (rule.name, agent)
        if key not in self._active:
            alert = await asyncio.to_thread(self._store.get, alert_id(rule.name, agent), Alert)
            self._active[key] = bool(alert is not None and alert.active)
        return self._active[key]

    async def _record(
        self,
        rule: AlertRule,
        agent: str,
        verdict: str,
        value: float | None,
        samples: int,
        now: datetime,
    ) -> AlertMessage | None:
        key = (rule.name, agent)
        alert = await asyncio.to_thread(self._store.get, alert_id(rule.name, agent), Alert)
        if alert is None:
            alert = Alert(rule=rule.name, agent=agent)
        threshold = rule.above if verdict == "raise" else rule.clear_at
        if (verdict == "raise") == alert.active:  # another monitor got there first
            self._active[key] = alert.active
            return None
        if verdict == "raise":
            assert value is not None
            alert.raise_alert(rule.metric, rule.window, value, threshold, samples)
        else:
            alert.clear(rule.metric, rule.window, value, threshold, samples)
        try:
            await asyncio.to_thread(self._store.save, alert)
        except ConcurrencyConflict:
            self._active.pop(key, None)  # reload next time
            return None
        self._active[key] = alert.active
        message = AlertMessage(
            state="raised" if verdict == "raise" else "cleared",
            rule=rule.name,
            agent=agent,
            metric=rule.metric,
            window=rule.window,
            value=value,
            threshold=threshold,
            samples=samples,
            at=now,
        )
        (log.warning if verdict == "raise" else log.info)(
            f"alert {message.state}",
            alert=verdict == "raise",
            rule=rule.name,
            agent=agent,
            metric=rule.metric,
            value=value,
            threshold=threshold,
            samples=samples,
        )
        if self._on_change is not None:
            self._on_change(message)
        if self._nc is not None:
            try:
                await self._nc.publish(
                    alert_subject(self._prefix, agent, rule.metric),
                    message.model_dump_json().encode(),
                )
            except Exception as e:  # recorded: NATS being down does not undo the alert
                log.warning("alert not published", rule=rule.name, agent=agent, error=str(e))
        return message
