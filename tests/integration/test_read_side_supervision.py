"""The read side under faults, with real NATS: the relay goes past a poison event and keeps
publishing, a dead relay task or projector thread is restarted, and the query responder
keeps answering whatever one request does (internal errors stay internal)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from agentledger.domain.conversation import Conversation
from agentledger.domain.run import AgentRun
from agentledger.handlers import queries
from agentledger.handlers.bootstrap import ProjectorService
from agentledger.handlers.client import QueryFailed, query_over_nats
from agentledger.handlers.relay import TRACKING_NAME, EventRelay
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.nats import ensure_streams
from agentledger.infra.poison_log import PoisonLog, UndecodableEvent
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import view_store_for
from support.harness import corrupt_stored_event, nats_client, running_projector

if TYPE_CHECKING:
    from tests.conftest import Backend, MakeSettings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(backend: Backend, make_settings: MakeSettings) -> Settings:
    return make_settings(backend)


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    event_store = EventStore(settings)
    yield event_store
    event_store.close()


def save_session(store: EventStore, session_id: str, turns: int = 1) -> None:
    """A session of completed runs (8 notifications the first turn, 7 each later one)."""
    conversation = Conversation(session_id=session_id)
    for turn in range(turns):
        run = AgentRun(
            task_id=f"{session_id}-t{turn}",
            agent="echo",
            prompt="p",
            session_id=session_id,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        store.save(run)
        run.send_model_request({})
        run.receive_model_response({}, "test", 2, 1)
        run.start_tool_call("c1", "add", {})
        store.save(run)
        run.finish_tool_call("c1", "add", 3)
        run.complete({"sum": 3}, cost_usd=0.01, duration_ms=5.0)
        conversation.record_turn(str(run.id), run.task_id, "echo", [])
        store.save(run, conversation)


async def eventually(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def collect_events(nc: Client, prefix: str) -> list[int]:
    """Subscribe to the relay's subjects; the notification ids received, as they come."""
    received: list[int] = []

    async def on_event(msg: Msg) -> None:
        received.append(json.loads(msg.data)["notification_id"])

    await nc.subscribe(f"{prefix}.events.>", cb=on_event)
    return received


async def test_the_relay_skips_an_undecodable_event_and_keeps_publishing(
    settings: Settings, store: EventStore
) -> None:
    save_session(store, "s-1", turns=2)  # notifications 1-15
    corrupt_stored_event(settings, 5, topic="gone.module:Vanished")
    corrupt_stored_event(settings, 13)  # state that does not parse
    async with nats_client(settings) as nc, running_projector(settings, queries=False) as service:
        received = await collect_events(nc, settings.subject_prefix)
        assert service.views is not None and service.event_relay is not None
        views = service.views

        async def relay_at(position: int) -> bool:
            return await asyncio.to_thread(views.tracking, TRACKING_NAME) >= position

        await eventually(lambda: relay_at(15), "the relay to pass the poison events")
        save_session(store, "s-2")  # later events still go out
        head = store.max_notification_id()
        await eventually(lambda: relay_at(head), "the relay to publish later events")
        await asyncio.sleep(0.2)
        assert service.event_relay.last_error is None
        assert service.event_relay.poisoned == 2
        relay_task = service._relay_task
        assert relay_task is not None and not relay_task.done()
        poison = await asyncio.to_thread(PoisonLog(views).entries, TRACKING_NAME)
        assert [(e.notification_id, e.topic) for e in poison] == [
            (5, "gone.module:Vanished"),
            (13, "agentledger.AgentRun.ToolCallFinished"),
        ]
        assert "cannot be decoded" in poison[1].reason
        samples = service.metrics.registry.get_sample_value
        assert samples("agentledger_poison_events_total", {"consumer": TRACKING_NAME}) == 2
        assert samples("agentledger_poison_events_total", {"consumer": "runs"}) == 2
    assert sorted(received) == [n for n in range(1, head + 1) if n not in (5, 13)]


async def test_the_relay_stops_before_an_undecodable_event_with_nothing_decodable_after(
    settings: Settings, store: EventStore
) -> None:
    save_session(store, "s-1")  # notifications 1-8
    corrupt_stored_event(settings, 8)  # the newest: maybe every event's fault (a wrong key)
    views = view_store_for(settings)
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream(), settings)
            received = await collect_events(nc, settings.subject_prefix)
            relay = EventRelay(store=store, views=views, nc=nc, prefix=settings.subject_prefix)
            assert await relay.publish_once() == 7  # what comes before it
            with pytest.raises(UndecodableEvent, match="notification 8"):
                await relay.publish_once()
            assert views.tracking(TRACKING_NAME) == 7
            save_session(store, "s-2")  # now one after it decodes: it is a poison event
            assert await relay.publish_once() == store.max_notification_id() - 7
            await asyncio.sleep(0.2)
        assert sorted(received) == [n for n in range(1, store.max_notification_id() + 1) if n != 8]
        assert [e.notification_id for e in PoisonLog(views).entries()] == [8]
    finally:
        views.close()


class _SmallPayloads:
    """A NATS connection whose server takes messages of at most 4 kB."""

    max_payload = 4096

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)


async def test_the_relay_skips_an_event_too_large_for_nats(
    settings: Settings, store: EventStore
) -> None:
    big = AgentRun(
        task_id="big",
        agent="echo",
        prompt="p" * 10_000,
        session_id=None,
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )
    big.complete("ok", cost_usd=None, duration_ms=1.0)
    store.save(big)  # notifications 1 (too large) and 2
    views = view_store_for(settings)
    try:
        async with nats_client(settings) as nc:
            await ensure_streams(nc.jetstream(), settings)
            received = await collect_events(nc, settings.subject_prefix)
            small: Any = _SmallPayloads(nc)
            relay = EventRelay(store=store, views=views, nc=small, prefix=settings.subject_prefix)
            assert await relay.publish_once() == 2
            await asyncio.sleep(0.2)
        assert received == [2]
        (entry,) = PoisonLog(views).entries()
        assert entry.notification_id == 1 and "max_payload (4096)" in entry.reason
    finally:
        views.close()


async def test_a_dead_projector_thread_or_relay_task_is_restarted(
    settings: Settings, store: EventStore
) -> None:
    async with nats_client(settings) as nc, running_projector(settings, queries=False) as service:
        received = await collect_events(nc, settings.subject_prefix)
        assert service.projector is not None
        projector = service.projector
        real_run_once = projector.run_once

        def die_once() -> int:
            projector.run_once = real_run_once  # type: ignore[method-assign]
            raise SystemExit("killed")  # not an Exception: ends the thread

        with capture_logs() as logs:
            projector.run_once = die_once  # type: ignore[method-assign]
            await eventually(lambda: _restarts(service, "projector", 1), "the projector restart")
            assert service._relay_task is not None
            service._relay_task.cancel()
            await eventually(lambda: _restarts(service, "relay", 1), "the relay restart")

        ended = [e for e in logs if "ended unexpectedly" in e["event"]]
        assert [(e["part"], e["log_level"], e["alert"]) for e in ended] == [
            ("projector", "error", True),
            ("relay", "error", True),
        ]
        save_session(store, "after")
        head = store.max_notification_id()
        assert await asyncio.to_thread(service.wait_until, head, 10)

        async def published() -> bool:
            return len(set(received)) == head

        await eventually(published, "every event published")


async def _restarts(service: ProjectorService, part: str, count: int) -> bool:
    value = service.metrics.registry.get_sample_value(
        "agentledger_projector_restarts_total", {"component": part}
    )
    return value == count


async def test_the_responder_keeps_internal_errors_to_itself_and_survives_bad_replies(
    settings: Settings, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):  # three runs in flight: three run snapshots
        store.save(
            AgentRun(
                task_id=f"in-flight-{i}",
                agent="echo",
                prompt="p",
                session_id=None,
                metadata={},
                usage_limits={},
                deadline=None,
                history_version=0,
            )
        )
    prefix = settings.subject_prefix
    async with nats_client(settings) as nc, running_projector(settings, relay=False) as service:
        assert await asyncio.to_thread(service.wait_until, store.max_notification_id(), 10)
        page = await query_over_nats(nc, prefix, "snapshots", {"kind": "run", "limit": 2})
        rest = await query_over_nats(nc, prefix, "snapshots", {"limit": 2, "offset": 2})
        assert len(page) == 2 and len(rest) == 1
        assert {s["task_id"] for s in page + rest} == {f"in-flight-{i}" for i in range(3)}
        with pytest.raises(QueryFailed, match="bad arguments for snapshots: limit"):
            await query_over_nats(nc, prefix, "snapshots", {"limit": 0})

        real_answer = queries.answer

        def leaky(*args: Any) -> Any:
            raise RuntimeError("cannot connect to postgresql://ledger:hunter2@db:5432")

        monkeypatch.setattr(queries, "answer", leaky)
        with capture_logs() as logs, pytest.raises(QueryFailed) as failed:
            await query_over_nats(nc, prefix, "runs", {})
        message = str(failed.value)
        assert message.startswith("internal error (logged as ") and "hunter2" not in message
        (logged,) = [e for e in logs if e["event"] == "query failed"]
        assert logged["error_id"] in message and logged["log_level"] == "error"

        def unavailable(*args: Any) -> Any:
            raise StoreUnavailable("view store unavailable: server at db:5432 closed")

        monkeypatch.setattr(queries, "answer", unavailable)
        with pytest.raises(QueryFailed, match=r"^views unavailable; try again \(logged as "):
            await query_over_nats(nc, prefix, "runs", {})

        # A reply larger than the server takes is answered with an error, not dropped.
        monkeypatch.setattr(queries, "answer", lambda *args: "x" * (nc.max_payload + 1))
        with pytest.raises(QueryFailed, match=r"more than NATS max_payload .* \(limit\)"):
            await query_over_nats(nc, prefix, "runs", {})
        monkeypatch.setattr(queries, "answer", real_answer)

        # A failing respond is logged; the responder answers the next request.
        real_respond = Msg.respond
        failures = iter([ConnectionError("reply subject gone")])

        async def respond_once_badly(self: Msg, data: bytes) -> None:
            error = next(failures, None)
            if error is not None:
                raise error
            await real_respond(self, data)

        monkeypatch.setattr(Msg, "respond", respond_once_badly)
        with capture_logs() as logs, pytest.raises(Exception, match="no answer"):
            await query_over_nats(nc, prefix, "runs", {}, timeout=0.5)
        assert any(e["event"] == "could not answer a query" for e in logs)
        runs = await query_over_nats(nc, prefix, "runs", {"limit": 1})
        assert len(runs) == 1
