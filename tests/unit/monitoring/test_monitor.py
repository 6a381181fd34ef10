"""The alert monitor over a runs view and an in-memory event store: made-up agent names
count as `_unknown`, a change is recorded once, and a failing check does not stop it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from agentledger.domain.monitoring.alert import Alert, alert_id
from agentledger.domain.monitoring.rules import AlertRule
from agentledger.domain.rejection import TaskRejection
from agentledger.handlers.monitoring.monitor import UNKNOWN_AGENT, AlertMonitor
from agentledger.infra.event_store import EventStore
from agentledger.projections.runs import RunsProjection


class _Views:
    def __init__(self) -> None:
        self.connection = sqlite3.connect(":memory:", check_same_thread=False)
        self.fail = False
        cursor = self.connection.cursor()
        for statement in RunsProjection.ddl:
            cursor.execute(statement)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        if self.fail:
            raise RuntimeError("views out of reach")
        yield self.connection.cursor()


def _reject(views: _Views, agents: list[str]) -> None:
    projection, cursor = RunsProjection(), views.connection.cursor()
    for i, agent in enumerate(agents):
        rejection = TaskRejection(
            key=f"k{i}",
            task_id=f"t{i}",
            agent=agent,
            subject="s",
            error_kind="unknown_agent",
            reason="no such agent",
            payload_excerpt="{}",
        )
        for event in rejection.collect_events():
            projection.apply(event, cursor)


def test_made_up_agents_count_as_unknown_and_alert_once() -> None:
    views, store = _Views(), EventStore.in_memory()
    rule = AlertRule(name="rejects", metric="rejections", window="1m", above=3, min_samples=1)
    monitor = AlertMonitor(
        rules=[rule],
        views=views,
        store=store,
        nc=None,
        prefix="p",
        known_agents={"calc"},  # type: ignore[arg-type]
    )
    _reject(views, [f"made-up-{i}" for i in range(5)])
    changes = asyncio.run(monitor.check())
    assert [(c.state, c.agent, c.value) for c in changes] == [("raised", UNKNOWN_AGENT, 5.0)]
    assert asyncio.run(monitor.check()) == []  # raised once
    alert = store.get(alert_id("rejects", UNKNOWN_AGENT), Alert)
    assert alert is not None and alert.active


def test_a_failing_check_is_retried_not_fatal() -> None:
    views, store = _Views(), EventStore.in_memory()
    rule = AlertRule(name="errors", metric="error_rate", above=0.5)
    monitor = AlertMonitor(
        rules=[rule],
        views=views,
        store=store,
        nc=None,
        prefix="p",
        interval_s=0.01,  # type: ignore[arg-type]
    )
    views.fail = True

    async def go() -> bool:
        stopping = asyncio.Event()
        task = asyncio.create_task(monitor.run(stopping))
        await asyncio.sleep(0.05)
        alive = not task.done()
        stopping.set()
        await task
        return alive

    assert asyncio.run(go())
