"""The poison log: events a read-side consumer (a projection, the relay) could not use and
skipped, with the reason, beside the views; and the decoding that tells such an event.

A consumer records an event here in the same transaction that moves its tracking row past
it, so an event is either applied (or published) or listed here, never silently gone.
`decode` turns any failure to decode a stored event into `UndecodableEvent`;
`decodes_after` is the guard against taking a fault of every event (a wrong cipher key,
code that does not know the log's topics yet) for one poison event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from eventsourcing.persistence import Notification
from eventsourcing.utils import TopicError

from agentledger.infra.event_store import EventStore
from agentledger.infra.view_store import ViewStore
from agentledger.projections.base import ViewCursor

__all__ = [
    "PoisonEvent",
    "PoisonLog",
    "UndecodableEvent",
    "UnknownEventTopic",
    "alert_poison",
    "decode",
    "decodes_after",
]

_DDL = (
    "CREATE TABLE IF NOT EXISTS al_poison_log ("
    "consumer TEXT NOT NULL, notification_id BIGINT NOT NULL, topic TEXT NOT NULL,"
    " originator_id TEXT NOT NULL, originator_version BIGINT NOT NULL, reason TEXT NOT NULL,"
    " recorded_at TEXT NOT NULL, PRIMARY KEY (consumer, notification_id))"
)
_COLUMNS = (
    "consumer",
    "notification_id",
    "topic",
    "originator_id",
    "originator_version",
    "reason",
    "recorded_at",
)
_REASON_CHARS = 2000
"""The longest reason kept (an error message can quote a whole value)."""
_TOPIC_CHARS = 500
_LOOK_AHEAD = 64
"""Notifications `decodes_after` reads past the one that failed."""


class UndecodableEvent(Exception):
    """A stored event cannot be decoded: its state does not decrypt, decompress or parse,
    or does not fit its event class."""

    def __init__(self, notification_id: int, topic: str, reason: str) -> None:
        super().__init__(f"notification {notification_id} ({topic!r}) cannot be decoded: {reason}")
        self.notification_id = notification_id
        self.topic = topic
        self.reason = reason


class UnknownEventTopic(UndecodableEvent):
    """A stored event's topic names no known event class: deploy the code that wrote it
    (or register the old topic). Consumers stop before it, and skip it as a poison event
    only once later events decode (so code that is behind the log is not mistaken for
    one bad event)."""

    def __init__(self, topic: str, notification_id: int) -> None:
        Exception.__init__(
            self,
            f"notification {notification_id} has event topic {topic!r}, which names no known"
            " event class; deploy the code that knows it, or register the old topic",
        )
        self.notification_id = notification_id
        self.topic = topic
        self.reason = f"unknown event topic {topic!r}"


def decode(store: EventStore, notification: Notification) -> object:
    """The domain event of a notification; `UndecodableEvent` for any failure to decode."""
    try:
        event: object = store.decode(notification)
    except TopicError:
        raise UnknownEventTopic(notification.topic, notification.id) from None
    except Exception as e:
        raise UndecodableEvent(
            notification.id, notification.topic, f"{type(e).__name__}: {e}"
        ) from e
    return event


@dataclass(frozen=True, kw_only=True)
class PoisonEvent:
    """One event a consumer skipped."""

    consumer: str
    """A projection's name, or `relay`."""
    notification_id: int
    topic: str
    originator_id: str
    originator_version: int
    reason: str
    """What failed: the error's type and message."""
    recorded_at: str
    """ISO 8601, UTC."""


class PoisonLog:
    """Records and lists the events consumers skipped (table `al_poison_log`)."""

    def __init__(self, views: ViewStore) -> None:
        self.views = views
        self._ready = False

    def ensure(self) -> None:
        """Create the table if missing (idempotent)."""
        if not self._ready:
            self.views.ensure_tables(_DDL)
            self._ready = True

    def record(
        self, cursor: ViewCursor, consumer: str, notification: Notification, reason: str
    ) -> PoisonEvent:
        """Inside the caller's transaction (the one that moves `consumer` past the event):
        note that `consumer` skipped `notification`, and why."""
        entry = PoisonEvent(
            consumer=consumer,
            notification_id=int(notification.id),
            topic=str(notification.topic)[:_TOPIC_CHARS],
            originator_id=str(notification.originator_id),
            originator_version=int(notification.originator_version),
            reason=reason[:_REASON_CHARS],
            recorded_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        values = [getattr(entry, column) for column in _COLUMNS]
        cursor.execute(
            f"INSERT INTO al_poison_log ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (consumer, notification_id)"
            " DO UPDATE SET reason = excluded.reason, recorded_at = excluded.recorded_at",
            values,
        )
        return entry

    def forget(self, cursor: ViewCursor, consumer: str) -> None:
        """Inside the caller's transaction: forget what `consumer` skipped (its view is
        being folded again, so each of those events gets another chance)."""
        cursor.execute("DELETE FROM al_poison_log WHERE consumer = ?", (consumer,))

    def entries(
        self, consumer: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[PoisonEvent]:
        """Skipped events (of one consumer, or all), in log order."""
        self.ensure()
        where, params = ("", ()) if consumer is None else (" WHERE consumer = ?", (consumer,))
        with self.views.read() as cursor:
            cursor.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM al_poison_log{where}"
                " ORDER BY notification_id, consumer LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            rows = cursor.fetchall()
        return [_entry(row) for row in rows]

    def count(self, consumer: str | None = None) -> int:
        self.ensure()
        where, params = ("", ()) if consumer is None else (" WHERE consumer = ?", (consumer,))
        with self.views.read() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM al_poison_log{where}", params)
            row = cursor.fetchone()
        return int(row[0]) if row else 0


def _entry(row: tuple[Any, ...]) -> PoisonEvent:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["notification_id"] = int(data["notification_id"])
    data["originator_version"] = int(data["originator_version"])
    return PoisonEvent(**data)


def decodes_after(store: EventStore, notification_id: int) -> bool:
    """Whether one of the next notifications after `notification_id` decodes.

    An event that cannot be decoded is taken for poison only then: when none of the next
    ones decodes either (or there are none yet), the fault is more likely every event's (a
    wrong cipher key, code not deployed), and skipping would skip the whole log.
    """
    for notification in store.notifications(notification_id + 1, _LOOK_AHEAD):
        try:
            store.decode(notification)
        except Exception:  # looking for one that decodes
            continue
        return True
    return False


def alert_poison(message: str, notification: Notification, reason: str, **where: str) -> None:
    """The one alert a skipped poison event raises (projector or relay): an error line
    with `alert=True`, naming the event and why."""
    structlog.get_logger("agentledger.poison").error(
        message,
        alert=True,
        **where,
        notification_id=notification.id,
        topic=notification.topic,
        originator_id=str(notification.originator_id),
        originator_version=notification.originator_version,
        reason=reason,
    )
