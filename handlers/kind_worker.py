"""What the graph and route workers share: a durable consumer of their own (fed by a
`TaskConsumer` thread), draining, the raw message as intake sees it, and keeping a
message as a dead letter. Each kind says how it processes a message and answers."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import structlog
from faststream.nats import NatsBroker

from agentledger.domain.tasks import RunOutcome
from agentledger.handlers.answers import TaskAnswers, checked_reply_subject
from agentledger.handlers.dead_letters import dead_letter
from agentledger.handlers.intake import RawTask, Rejection
from agentledger.handlers.task_consumer import (
    Delivery,
    TaskConsumer,
    release_in_flight,
    worker_consumer,
)
from agentledger.handlers.worker import DRAIN_REDELIVERY_DELAY_S, REPLY_HEADER, backoff_s
from agentledger.infra.event_store import AsyncEventStore, StoreUnavailable
from agentledger.infra.settings import Settings

__all__ = ["KindWorker", "Received"]


@dataclass(frozen=True)
class Received:
    """A delivery as the intake and the delivery rules see it."""

    raw: RawTask
    reply_to: str | None
    delivered: int
    final: bool
    """The last delivery (AGENTLEDGER_MAX_DELIVERIES): give up rather than nak."""
    bound: Any


class KindWorker(ABC):
    """A worker for one kind of task message (`subject`) on its own durable consumer."""

    name: str
    """The consumer thread's name (logs)."""
    what: str
    """What its messages are called in logs ("graph tasks")."""

    def __init__(
        self,
        *,
        settings: Settings,
        broker: NatsBroker,
        store: AsyncEventStore,
        subject: str,
        durable: str,
        logger: Any,
        extra_subjects: tuple[str, ...] = (),
    ) -> None:
        """`extra_subjects`: more subjects the same durable consumer takes."""
        self.settings = settings
        self.broker = broker
        self.store = store
        self.prefix = settings.subject_prefix
        self.subject = subject
        self.extra_subjects = extra_subjects
        self.durable = durable
        self.log = logger
        self.answers = TaskAnswers(broker=broker, store=store, prefix=self.prefix)
        self.consumer: TaskConsumer | None = None
        self.in_flight: dict[asyncio.Task[Any], Delivery] = {}
        self.draining = False

    async def start(self) -> None:
        self.consumer = worker_consumer(
            self.settings,
            name=self.name,
            subject=self.subject,
            durable=self.durable,
            handle=self.handle,
            extra_subjects=self.extra_subjects,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.close()

    async def drain(self, grace_s: float) -> None:
        """Stop taking tasks; wait up to `grace_s` for those in hand; release the rest."""
        self.draining = True
        if self.consumer is not None:
            await self.consumer.stop_fetching()
        await release_in_flight(self.in_flight, grace_s, what=self.what)

    async def handle(self, body: bytes, msg: Delivery) -> None:
        if self.draining:
            await msg.nack(delay=DRAIN_REDELIVERY_DELAY_S)
            return
        current = asyncio.current_task()
        assert current is not None
        self.in_flight[current] = msg
        try:
            await self.process(self.received(body, msg), msg)
        finally:
            self.in_flight.pop(current, None)

    def received(self, body: bytes, msg: Delivery) -> Received:
        raw_msg = msg.raw_message
        metadata = raw_msg.metadata
        headers = raw_msg.headers or {}
        delivered = metadata.num_delivered or 1
        raw = RawTask(
            body=body,
            subject=raw_msg.subject,
            msg_id=headers.get("Nats-Msg-Id"),
            fallback_key=f"{metadata.stream}:{metadata.sequence.stream}",
            delivered=delivered,
        )
        bound = self.log.bind(subject=raw.subject, delivered=delivered)
        return Received(
            raw=raw,
            reply_to=checked_reply_subject(self.prefix, headers.get(REPLY_HEADER), bound),
            delivered=delivered,
            final=delivered >= self.settings.max_deliveries,
            bound=bound,
        )

    @abstractmethod
    async def process(self, received: Received, msg: Delivery) -> None:
        """Process one message and settle it (ack, nak or term)."""

    @abstractmethod
    async def _dead_letter(
        self,
        msg: Delivery,
        raw: RawTask,
        message: Any,
        kind: str,
        reason: str,
        reply_to: str | None,
    ) -> None:
        """Keep the message as a dead letter (`keep_dead`), answer it, and settle it."""

    async def record_rejection(
        self, msg: Delivery, rejection: Rejection, received: Received
    ) -> RunOutcome | None:
        """The rejection, recorded; None when the store is down: the message is then
        nakked to come back, or on its last delivery dead-lettered (and answered)."""
        try:
            return await self.answers.record_rejection(rejection, received.raw)
        except StoreUnavailable as e:
            if not received.final:
                received.bound.warning("cannot record rejection yet; will retry", error=str(e))
                await msg.nack(delay=backoff_s(received.delivered))
                return None
            await self._dead_letter(
                msg, received.raw, None, str(rejection.kind), str(e), received.reply_to
            )
            return None

    async def keep_dead(
        self, msg: Delivery, raw: RawTask, task_id: str | None, kind: str, reason: str
    ) -> int | None:
        """Keep the message in the dead-letter stream; its sequence there, or None when
        even that failed (the message is then nakked to come back later)."""
        metadata = msg.raw_message.metadata
        try:
            sequence = await dead_letter(
                self.broker.connection.jetstream(),
                self.prefix,
                subject=raw.subject,
                body=raw.body,
                headers=dict(msg.raw_message.headers or {}),
                task_id=task_id,
                kind=kind,
                reason=reason,
                delivered=metadata.num_delivered or 1,
                tasks_sequence=metadata.sequence.stream,
            )
        except Exception as e:
            structlog.get_logger("agentledger.worker").error(
                "cannot dead-letter the message", error=str(e), reason=reason
            )
            await msg.nack(delay=backoff_s(metadata.num_delivered or 1))
            return None
        self.log.error(f"{self.what} dead-lettered", dead_letter=sequence, kind=kind, reason=reason)
        return sequence
