"""The event relay: committed events go out on `<prefix>.events.<aggregate>.<event>`.

It follows the notification log with its own tracking row. Each event is published
with `Nats-Msg-Id: <app>:<notification id>`, so a relay that crashes between publishing
and recording its position republishes into JetStream's duplicate window and nothing is
written twice; the position only moves after JetStream acknowledged every publish, so
nothing is lost between the database and the bus.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import structlog
from nats.aio.client import Client

from agentledger.domain.timeline import event_record
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.view_store import ViewStore

__all__ = ["EventRelay"]

log = structlog.get_logger("agentledger.relay")

TRACKING_NAME = "relay"
MAX_IDLE_POLL_S = 0.2


class EventRelay:
    """Publishes the event log to NATS, exactly once per notification."""

    def __init__(
        self,
        *,
        store: EventStore,
        views: ViewStore,
        nc: Client,
        prefix: str,
        batch: int = 256,
        poll_s: float = 0.02,
        horizon: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._views = views
        self._nc = nc
        self._prefix = prefix
        self._batch = batch
        self._poll_s = poll_s
        self._horizon = horizon
        self.position: int | None = None
        """Last published notification id; read from the tracking row once, then kept."""

    async def publish_once(self) -> int:
        """Publish the next batch of notifications; returns how many."""
        if self.position is None:
            self.position = await asyncio.to_thread(self._views.tracking, TRACKING_NAME)
        position = self.position
        limit = self._batch
        if self._horizon is not None:
            # Publish only what the projector has applied: on PostgreSQL notification ids
            # can commit out of order, and the projector's position never passes an id
            # still in flight, so nothing is skipped here either.
            limit = min(limit, await asyncio.to_thread(self._horizon) - position)
            if limit <= 0:
                return 0
        notifications = await asyncio.to_thread(self._store.notifications, position + 1, limit)
        if not notifications:
            return 0
        js = self._nc.jetstream()
        publishes = []
        for notification in notifications:
            record = event_record(self._store.decode(notification))
            subject = f"{self._prefix}.events.{record.aggregate_type}.{record.name}"
            body = json.dumps({"notification_id": notification.id, **record.as_dict()})
            publishes.append(
                js.publish(
                    subject,
                    body.encode(),
                    headers={"Nats-Msg-Id": f"{self._store.name}:{notification.id}"},
                )
            )
        await asyncio.gather(*publishes)
        last = notifications[-1].id

        def advance() -> None:
            with self._views.transaction() as cursor:
                self._views.set_tracking(cursor, TRACKING_NAME, last)

        await asyncio.to_thread(advance)
        self.position = last
        return len(notifications)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Publish until `stop`; idle polls back off from `poll_s` to `MAX_IDLE_POLL_S`."""
        failures = 0
        idle_s = self._poll_s
        while not stop.is_set():
            try:
                published = await self.publish_once()
                failures = 0
            except (StoreUnavailable, OSError, TimeoutError) as e:
                self.position = None  # re-read: another relay may have moved it meanwhile
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning("relay cannot progress; retrying", error=str(e), delay_s=delay)
                await _sleep_or_stop(stop, delay)
                continue
            except Exception as e:
                if type(e).__module__.startswith("nats"):
                    failures += 1
                    delay = min(5.0, 0.1 * 2**failures)
                    log.warning("relay publish failed; retrying", error=str(e), delay_s=delay)
                    await _sleep_or_stop(stop, delay)
                    continue
                raise
            if published == 0:
                await _sleep_or_stop(stop, idle_s)
                idle_s = min(MAX_IDLE_POLL_S, idle_s * 1.5)
            else:
                idle_s = self._poll_s


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
