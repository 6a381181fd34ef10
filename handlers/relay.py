"""The event relay: committed events go out on `<prefix>.events.<aggregate>.<event>`.

It follows the notification log with its own tracking row. Each event is published
with `Nats-Msg-Id: <app>:<notification id>`, so a relay that crashes between publishing
and recording its position republishes into JetStream's duplicate window and nothing is
written twice; the position only moves after JetStream acknowledged every publish, so
nothing is lost between the database and the bus.

Faults never end the relay: a store outage or a NATS error is retried with backoff, and
so is any other error (logged with its traceback). A poison event is skipped, never
silently: an event that cannot be decoded (its topic names no class, its state does not
decrypt or parse) while a later one can, or whose JSON is larger than the server's
`max_payload`. Nothing is published for it - no placeholder: the events stream carries
only real events, and its consumers already meet gaps in the notification ids (rolled-back
transactions, archived runs). It is recorded in the poison log (consumer `relay`,
`al_poison_log`) in the transaction that moves the relay's position past it, logged as
an error with `alert=True` and counted (`poisoned`, `on_poison`), and the relay goes on
with the next events. An undecodable event with nothing decodable after it (a wrong
cipher key, code behind the log) is not skipped: the relay publishes up to it and retries
there, loudly. With a horizon (the projector's position, as `agentledger project` runs
it) the relay only reaches an event once every projection has applied or skipped it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from eventsourcing.persistence import Notification
from nats.aio.client import Client

from agentledger.domain.timeline import event_record
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.poison_log import (
    PoisonLog,
    UndecodableEvent,
    alert_poison,
    decode,
    decodes_after,
)
from agentledger.infra.view_store import ViewStore

__all__ = ["TRACKING_NAME", "EventRelay"]

log = structlog.get_logger("agentledger.relay")

TRACKING_NAME = "relay"
"""The relay's tracking row, and its name in the poison log."""
MAX_IDLE_POLL_S = 0.2
_HEADERS_ROOM = 512
"""Bytes of `max_payload` kept for the message's headers."""


@dataclass(frozen=True, kw_only=True)
class _Outgoing:
    """What a batch of notifications comes to."""

    messages: list[tuple[str, bytes, str]]
    """(subject, body, Nats-Msg-Id) to publish."""
    poisoned: list[tuple[Notification, str]]
    """Poison events, with the reason, to record instead."""
    last: int
    """The notification id the relay's position moves to."""


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
        self._poison_log = PoisonLog(views)
        self.position: int | None = None
        """Last published notification id; read from the tracking row once, then kept."""
        self.poisoned = 0
        """Poison events skipped by this relay."""
        self.on_poison: Callable[[str], None] | None = None
        """Called with `TRACKING_NAME` whenever the relay skips a poison event."""
        self.last_error: Exception | None = None
        """The error of the latest failed pass of `run_forever` (None once it recovers)."""

    async def publish_once(self) -> int:
        """Publish the next batch of notifications; how many the position moved past
        (published or skipped as poison)."""
        if self.position is None:
            await asyncio.to_thread(self._poison_log.ensure)
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
        outgoing = await asyncio.to_thread(self._outgoing, notifications)
        js = self._nc.jetstream()
        await asyncio.gather(
            *(
                js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})
                for subject, body, msg_id in outgoing.messages
            )
        )

        def advance() -> None:
            with self._views.transaction() as cursor:
                for notification, reason in outgoing.poisoned:
                    self._poison_log.record(cursor, TRACKING_NAME, notification, reason)
                self._views.set_tracking(cursor, TRACKING_NAME, outgoing.last)

        await asyncio.to_thread(advance)
        self.position = outgoing.last
        for notification, reason in outgoing.poisoned:
            self._skipped(notification, reason)
        return len(outgoing.messages) + len(outgoing.poisoned)

    def _outgoing(self, notifications: Sequence[Notification]) -> _Outgoing:
        """The messages of a batch, and its poison events (off the event loop: decoding
        may decrypt and decompress)."""
        max_body = self._nc.max_payload - _HEADERS_ROOM
        messages: list[tuple[str, bytes, str]] = []
        poisoned: list[tuple[Notification, str]] = []
        last = notifications[0].id - 1
        for notification in notifications:
            try:
                record = event_record(decode(self._store, notification))
                body = json.dumps({"notification_id": notification.id, **record.as_dict()})
            except UndecodableEvent as e:
                if not decodes_after(self._store, notification.id):
                    if last < notifications[0].id:
                        raise  # maybe every event's fault: stop here, retried loudly
                    break  # publish what comes before it first
                poisoned.append((notification, f"{type(e).__name__}: {e}"))
            except Exception as e:  # the event decodes but does not render as JSON
                poisoned.append((notification, f"{type(e).__name__}: {e}"))
            else:
                encoded = body.encode()
                if len(encoded) > max_body:
                    poisoned.append(
                        (
                            notification,
                            f"the event's JSON is {len(encoded)} bytes, more than NATS"
                            f" max_payload ({self._nc.max_payload}) allows",
                        )
                    )
                else:
                    subject = f"{self._prefix}.events.{record.aggregate_type}.{record.name}"
                    msg_id = f"{self._store.name}:{notification.id}"
                    messages.append((subject, encoded, msg_id))
            last = notification.id
        return _Outgoing(messages=messages, poisoned=poisoned, last=last)

    def _skipped(self, notification: Notification, reason: str) -> None:
        self.poisoned += 1
        alert_poison(
            "poison event not published: recorded in al_poison_log",
            notification,
            reason,
            consumer=TRACKING_NAME,
        )
        if self.on_poison is not None:
            self.on_poison(TRACKING_NAME)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Publish until `stop`; idle polls back off from `poll_s` to `MAX_IDLE_POLL_S`;
        every error is logged and retried with backoff (see the module docstring)."""
        failures = 0
        idle_s = self._poll_s
        while not stop.is_set():
            try:
                published = await self.publish_once()
            except Exception as e:
                self.position = None  # re-read: another relay may have moved it meanwhile
                self.last_error = e
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                if isinstance(e, StoreUnavailable | OSError | TimeoutError) or _from_nats(e):
                    log.warning("relay cannot progress; retrying", error=str(e), delay_s=delay)
                else:
                    log.exception("relay failed; retrying", delay_s=delay)
                await _sleep_or_stop(stop, delay)
                continue
            failures = 0
            self.last_error = None
            if published == 0:
                await _sleep_or_stop(stop, idle_s)
                idle_s = min(MAX_IDLE_POLL_S, idle_s * 1.5)
            else:
                idle_s = self._poll_s


def _from_nats(error: Exception) -> bool:
    return type(error).__module__.startswith("nats")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
