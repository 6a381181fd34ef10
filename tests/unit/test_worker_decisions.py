"""The worker's ack / nak / term / dead-letter decisions, one test per branch, without
servers: a fake message, a fake broker connection and a scripted runner."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentledger.domain.errors import ErrorKind
from agentledger.domain.tasks import RunAgent, RunError, RunOutcome
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.worker import DRAIN_REDELIVERY_DELAY_S, TaskWorker, backoff_s
from agentledger.infra.event_store import (
    AsyncEventStore,
    BrokenStream,
    EventStore,
    StoreUnavailable,
)
from agentledger.infra.leases import Held, Lease
from agentledger.infra.settings import DEFAULT_CATALOG, Settings

PREFIX = "unit"
MAX_DELIVERIES = 3


# -- fakes ------------------------------------------------------------------------------


@dataclass
class Ack:
    seq: int
    duplicate: bool = False


@dataclass
class FakeJetStream:
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    down: bool = False

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> Ack:
        if self.down:
            raise ConnectionError("nats: connection closed")
        self.published.append((subject, payload, headers))
        return Ack(seq=len(self.published))


@dataclass
class FakeNats:
    js: FakeJetStream = field(default_factory=FakeJetStream)
    replies: list[tuple[str, bytes]] = field(default_factory=list)

    def jetstream(self) -> FakeJetStream:
        return self.js

    async def publish(self, subject: str, payload: bytes) -> None:
        self.replies.append((subject, payload))


@dataclass
class FakeBroker:
    connection: FakeNats = field(default_factory=FakeNats)

    def subscriber(self, *args: Any, **kwargs: Any) -> Any:
        return lambda handler: handler


@dataclass
class Sequence:
    stream: int = 7


@dataclass
class Metadata:
    num_delivered: int
    stream: str = "UNIT_TASKS"
    sequence: Sequence = field(default_factory=Sequence)


@dataclass
class Raw:
    subject: str
    headers: dict[str, str]
    metadata: Metadata


@dataclass
class FakeMessage:
    """What the worker does with a delivery: exactly one of ack / nack / reject."""

    raw_message: Raw
    actions: list[tuple[str, float | None]] = field(default_factory=list)
    leases: list[Any] = field(default_factory=list)
    """What each `acquire_lease` call returns, in turn (empty: leases are off)."""

    async def acquire_lease(self, run_id: str) -> Any:
        return self.leases.pop(0) if self.leases else None

    async def ack(self) -> None:
        self.actions.append(("ack", None))

    async def nack(self, delay: float | None = None) -> None:
        self.actions.append(("nak", delay))

    async def reject(self) -> None:
        self.actions.append(("term", None))

    async def in_progress(self) -> None:
        pass


@dataclass
class ScriptedRunner:
    """Returns `outcome` or raises `error`; `give_up` likewise."""

    error: BaseException | None = None
    give_up_error: BaseException | None = None
    gave_up: list[tuple[str, ErrorKind, str]] = field(default_factory=list)

    runs: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, task: RunAgent, **options: Any) -> RunOutcome:
        self.runs.append(options)
        if self.error is not None:
            raise self.error
        return RunOutcome(task_id=task.task_id, run_id="r", status="completed", output="ok")

    async def give_up(self, task: RunAgent, kind: ErrorKind, message: str) -> RunOutcome:
        if self.give_up_error is not None:
            raise self.give_up_error
        self.gave_up.append((task.task_id, kind, message))
        error = RunError(kind=str(kind), message=message, retryable=True)
        return RunOutcome(task_id=task.task_id, run_id="r", status="failed", error=error)


class DownStore(EventStore):
    def __init__(self) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    def save(self, *objs: Any) -> int | None:
        raise StoreUnavailable("event store unavailable: down")

    def events(self, aggregate_id: Any, lte: int | None = None) -> list[Any]:
        raise StoreUnavailable("event store unavailable: down")


def make_worker(runner: ScriptedRunner, *, store_down: bool = False) -> TaskWorker:
    settings = Settings(subject_prefix=PREFIX, max_deliveries=MAX_DELIVERIES)
    store = DownStore() if store_down else EventStore.in_memory()
    return TaskWorker(
        settings=settings,
        broker=FakeBroker(),  # type: ignore[arg-type]
        store=AsyncEventStore(store, 0, retry_s=0),
        catalog=Catalog.load(DEFAULT_CATALOG),
        runner=runner,  # type: ignore[arg-type]
    )


def delivery(delivered: int, body: bytes | None = None, msg_id: str = "t-1") -> FakeMessage:
    if body is None:
        body = json.dumps({"task_id": "t-1", "agent": "calculator", "prompt": "add 1 and 2"})
        body = body.encode()
    headers = {"Nats-Msg-Id": msg_id}
    raw = Raw(f"{PREFIX}.tasks.run.calculator", headers, Metadata(num_delivered=delivered))
    message = FakeMessage(raw)
    message.body = body  # type: ignore[attr-defined]
    return message


async def handle(worker: TaskWorker, message: FakeMessage) -> None:
    await worker.handle(message.body, message)  # type: ignore[attr-defined,arg-type]


def outcomes(worker: TaskWorker) -> list[tuple[str, dict[str, Any]]]:
    js = worker.broker.connection.js  # type: ignore[attr-defined]
    return [(s, json.loads(p)) for s, p, _ in js.published if ".results." in s]


def dead_letters(worker: TaskWorker) -> list[tuple[str, dict[str, str]]]:
    js = worker.broker.connection.js  # type: ignore[attr-defined]
    return [(s, h) for s, _, h in js.published if ".dead." in s]


# -- one test per branch ----------------------------------------------------------------


async def test_a_finished_run_is_answered_then_acked() -> None:
    worker = make_worker(ScriptedRunner())
    message = delivery(1)
    await handle(worker, message)
    assert message.actions == [("ack", None)]
    assert [(s, o["status"]) for s, o in outcomes(worker)] == [
        (f"{PREFIX}.results.t-1", "completed")
    ]


async def test_a_run_whose_lease_another_worker_holds_is_handed_back_not_driven() -> None:
    runner = ScriptedRunner()
    worker = make_worker(runner)
    message = delivery(1)
    message.leases = [Held("other-worker#1", 4.0)]
    await handle(worker, message)
    assert message.actions == [("nak", 4.5)]
    assert runner.runs == [] and outcomes(worker) == []


async def test_on_the_last_delivery_a_held_lease_is_waited_for_then_the_run_driven() -> None:
    runner = ScriptedRunner()
    worker = make_worker(runner)
    message = delivery(MAX_DELIVERIES)
    lease = Lease("r", "run.r", "me#1", 30.0, revision=7)
    message.leases = [Held("other-worker#1", 0.1), Held("other-worker#1", 0.1), lease]
    await handle(worker, message)
    assert message.actions == [("ack", None)]
    assert len(runner.runs) == 1 and runner.runs[0]["guard"] == lease.check
    assert [o["status"] for _, o in outcomes(worker)] == ["completed"]


async def test_poison_input_is_recorded_answered_and_terminated() -> None:
    worker = make_worker(ScriptedRunner())
    message = delivery(1, body=b"{not json", msg_id="t-bad")
    await handle(worker, message)
    assert message.actions == [("term", None)]
    assert dead_letters(worker) == []
    events = worker.store.sync.events(_rejection_id("t-bad"))
    assert [type(e).__name__ for e in events] == ["TaskRejected"]


async def test_a_rejection_that_cannot_be_recorded_is_retried_before_the_last_delivery() -> None:
    worker = make_worker(ScriptedRunner(), store_down=True)
    message = delivery(1, body=b"{not json")
    await handle(worker, message)
    assert message.actions == [("nak", backoff_s(1))]


async def test_a_rejection_that_cannot_be_recorded_on_the_last_delivery_is_dead_lettered() -> None:
    worker = make_worker(ScriptedRunner(), store_down=True)
    message = delivery(MAX_DELIVERIES, body=b"{not json")
    await handle(worker, message)
    assert message.actions == [("term", None)]
    ((subject, headers),) = dead_letters(worker)
    assert subject == f"{PREFIX}.dead.tasks"
    assert headers["Agentledger-Dead-Kind"] == "invalid_json"
    assert headers["Agentledger-Dead-Delivered"] == str(MAX_DELIVERIES)


async def test_a_transient_failure_is_redelivered_with_backoff() -> None:
    worker = make_worker(ScriptedRunner(error=StoreUnavailable("down")))
    message = delivery(2)
    await handle(worker, message)
    assert message.actions == [("nak", backoff_s(2))]
    assert outcomes(worker) == []


async def test_a_transient_failure_on_the_last_delivery_ends_the_run_as_failed() -> None:
    runner = ScriptedRunner(error=StoreUnavailable("down"))
    worker = make_worker(runner)
    message = delivery(MAX_DELIVERIES)
    await handle(worker, message)
    assert message.actions == [("term", None)]
    assert runner.gave_up[0][:2] == ("t-1", ErrorKind.TRANSIENT_EXHAUSTED)
    ((_, outcome),) = outcomes(worker)
    assert outcome["status"] == "failed" and outcome["error"]["kind"] == "transient_exhausted"
    assert dead_letters(worker) == []


async def test_an_unexpected_error_is_redelivered_then_fails_the_run_as_internal_error() -> None:
    runner = ScriptedRunner(error=LookupError("a bug"))
    worker = make_worker(runner)
    first = delivery(1)
    await handle(worker, first)
    assert first.actions == [("nak", backoff_s(1))]
    last = delivery(MAX_DELIVERIES)
    await handle(worker, last)
    assert last.actions == [("term", None)]
    assert runner.gave_up[0][1] == ErrorKind.INTERNAL_ERROR
    assert "LookupError: a bug" in runner.gave_up[0][2]


async def test_what_cannot_be_recorded_on_the_last_delivery_is_dead_lettered_and_answered() -> None:
    runner = ScriptedRunner(error=StoreUnavailable("down"), give_up_error=StoreUnavailable("down"))
    worker = make_worker(runner)
    message = delivery(MAX_DELIVERIES)
    await handle(worker, message)
    assert message.actions == [("term", None)]
    ((_, headers),) = dead_letters(worker)
    assert headers["Agentledger-Dead-Task-Id"] == "t-1"
    assert headers["Nats-Msg-Id"] == "dead:7"
    assert json.loads(headers["Agentledger-Dead-Headers"]) == {"Nats-Msg-Id": "t-1"}
    ((_, outcome),) = outcomes(worker)
    assert outcome["status"] == "failed" and outcome["error"]["kind"] == "dead_lettered"
    assert "agentledger dead retry 1" in outcome["error"]["message"]


async def test_a_broken_stream_gives_up_at_once() -> None:
    runner = ScriptedRunner(error=BrokenStream("not contiguous"))
    worker = make_worker(runner)
    message = delivery(1)
    await handle(worker, message)
    assert message.actions == [("term", None)]
    assert runner.gave_up[0][1] == ErrorKind.INTERNAL_ERROR


async def test_when_nothing_can_hold_the_message_it_is_left_to_jetstream() -> None:
    runner = ScriptedRunner(error=StoreUnavailable("down"), give_up_error=StoreUnavailable("down"))
    worker = make_worker(runner)
    worker.broker.connection.js.down = True  # type: ignore[attr-defined]
    message = delivery(MAX_DELIVERIES)
    await handle(worker, message)
    assert message.actions == [("nak", backoff_s(MAX_DELIVERIES))]


async def test_a_draining_worker_hands_new_deliveries_back() -> None:
    worker = make_worker(ScriptedRunner())
    worker.draining = True
    message = delivery(1)
    await handle(worker, message)
    assert message.actions == [("nak", DRAIN_REDELIVERY_DELAY_S)]


async def test_a_malformed_message_claiming_another_tasks_id_is_not_stored_as_its_outcome() -> None:
    worker = make_worker(ScriptedRunner())
    body = json.dumps({"task_id": "victim", "agent": "calculator", "prompt": 5}).encode()
    message = delivery(1, body=body, msg_id="attacker")
    await handle(worker, message)
    assert message.actions == [("term", None)]
    assert outcomes(worker) == []


def _rejection_id(key: str) -> Any:
    from agentledger.domain.ids import rejection_id_for

    return rejection_id_for(key)


pytestmark = pytest.mark.asyncio


async def test_a_nats_error_is_transient_not_unexpected() -> None:
    from nats.errors import TimeoutError as NatsTimeoutError

    runner = ScriptedRunner(error=NatsTimeoutError())
    worker = make_worker(runner)
    message = delivery(MAX_DELIVERIES)
    await handle(worker, message)
    assert message.actions == [("term", None)]
    assert runner.gave_up[0][1] == ErrorKind.TRANSIENT_EXHAUSTED
