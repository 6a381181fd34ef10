"""Committed events go out on NATS exactly once; queries answer over request-reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentledger.domain.tasks import RunAgent
from agentledger.handlers.client import QueryFailed, query_over_nats, submit
from agentledger.handlers.queries import QueryService
from agentledger.handlers.relay import TRACKING_NAME, EventRelay
from agentledger.infra.event_store import EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import view_store_for
from agentledger.projections.views import ALL_PROJECTIONS
from support.agents import write_catalog
from support.harness import nats_client, running_projector, running_worker

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(backend, catalog=str(write_catalog(tmp_path)))


async def _stream_messages(nc, stream: str) -> int:  # type: ignore[no-untyped-def]
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)


async def test_relay_publishes_each_committed_event_once(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        received: list[tuple[str, dict]] = []

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            received.append((msg.subject, json.loads(msg.data)))

        await nc.subscribe(f"{prefix}.events.>", cb=collect)
        for i in range(3):
            await submit(
                nc, prefix, RunAgent(task_id=f"rel-{i}", agent="calculator", prompt="add 1 and 2")
            )
        async with running_projector(settings, queries=False) as projector:
            assert projector.store is not None
            last = projector.store.max_notification_id()
            for _ in range(200):
                if await _stream_messages(nc, settings.events_stream) >= last:
                    break
                await asyncio.sleep(0.05)
        assert await _stream_messages(nc, settings.events_stream) == last

        # A relay that crashed after publishing but before moving its position
        # publishes the same notifications again: JetStream drops them as duplicates.
        store = EventStore(settings)
        views = view_store_for(settings)
        try:
            with views.transaction() as cursor:
                views.set_tracking(cursor, TRACKING_NAME, 0)
            relay = EventRelay(store=store, views=views, nc=nc, prefix=prefix)
            while await relay.publish_once():
                pass
        finally:
            views.close()
            store.close()
        assert await _stream_messages(nc, settings.events_stream) == last
        await asyncio.sleep(0.2)

    subjects = [s for s, _ in received]
    assert f"{prefix}.events.AgentRun.RunRequested" in subjects
    assert f"{prefix}.events.AgentRun.ToolCallFinished" in subjects
    ids = [body["notification_id"] for _, body in received]
    assert sorted(set(ids)) == list(range(1, last + 1))
    first = next(body for s, body in received if s.endswith("RunCompleted"))
    assert first["aggregate_type"] == "AgentRun" and first["data"]["output"] == "The result is 3.0."


async def test_queries_over_nats_request_reply(settings: Settings) -> None:
    prefix = settings.subject_prefix
    async with (
        running_worker(settings),
        running_projector(settings, relay=False) as projector,
        nats_client(settings) as nc,
    ):
        for i, prompt in enumerate(["remember alpha", "what do you remember?"]):
            await submit(
                nc,
                prefix,
                RunAgent(task_id=f"q-{i}", agent="notes", prompt=prompt, session_id="qs"),
            )
        await submit(
            nc, prefix, RunAgent(task_id="q-calc", agent="calculator", prompt="add 2 and 2")
        )
        assert projector.store is not None
        assert await asyncio.to_thread(
            projector.wait_until, projector.store.max_notification_id(), 10
        )

        conversation = await query_over_nats(nc, prefix, "conversation", {"session_id": "qs"})
        run = await query_over_nats(nc, prefix, "run", {"task_id": "q-calc"})
        runs = await query_over_nats(nc, prefix, "runs", {"agent": "notes"})
        metrics = await query_over_nats(nc, prefix, "metrics", {})
        with pytest.raises(QueryFailed, match="unknown view 'nope'"):
            await query_over_nats(nc, prefix, "nope", {})
        with pytest.raises(QueryFailed, match="bad arguments for runs: limit"):
            await query_over_nats(nc, prefix, "runs", {"limit": 0})

    assert [t["turn"] for t in conversation["turns"]] == [1, 2]
    assert conversation["turns"][1]["transcript"][-1]["content"] == "You told me: alpha."
    assert run["status"] == "completed" and run["output"] == "The result is 4.0."
    assert run["tool_calls"] == 1 and run["cost_usd"] > 0
    assert {r["task_id"] for r in runs} == {"q-0", "q-1"}
    by_agent = {m["agent"]: m for m in metrics}
    assert by_agent["notes"]["completed"] == 2 and by_agent["calculator"]["runs"] == 1
    assert by_agent["calculator"]["latency_p50_ms"] is not None


async def test_relay_never_publishes_past_its_horizon(settings: Settings) -> None:
    # On PostgreSQL ids can commit out of order; the relay follows the projector's
    # position (which never passes an id still in flight) instead of the raw log head.
    prefix = settings.subject_prefix
    async with running_worker(settings), nats_client(settings) as nc:
        await submit(nc, prefix, RunAgent(task_id="hz-1", agent="calculator", prompt="add 1 and 2"))
        store = EventStore(settings)
        views = view_store_for(settings)
        try:
            assert store.max_notification_id() > 3
            horizon = 3
            relay = EventRelay(
                store=store, views=views, nc=nc, prefix=prefix, horizon=lambda: horizon
            )
            assert await relay.publish_once() == 3
            assert await relay.publish_once() == 0
            horizon = store.max_notification_id()
            assert await relay.publish_once() == horizon - 3
        finally:
            views.close()
            store.close()
        assert await _stream_messages(nc, settings.events_stream) == horizon


async def test_a_query_asked_right_after_the_responder_starts_is_answered(
    settings: Settings,
) -> None:
    """Regression: `QueryService.start` returned before the server had its subscription,
    so a client on another connection asking at once could get "no query responder"
    (a CI failure). Each round starts a responder on a fresh connection and asks at once."""
    views = view_store_for(settings)
    for projection in ALL_PROJECTIONS:
        views.ensure(projection)
    try:
        async with nats_client(settings) as asker:
            for _ in range(20):
                async with nats_client(settings) as own:
                    service = QueryService(views=views, nc=own, prefix=settings.subject_prefix)
                    await service.start()
                    try:
                        runs = await query_over_nats(asker, settings.subject_prefix, "runs", {})
                    finally:
                        await service.stop()
                    assert runs == []
    finally:
        views.close()


async def test_a_query_waits_a_moment_for_a_responder_that_is_starting(
    settings: Settings,
) -> None:
    """Regression (a CI run): a query asked while the responder (re)starts got "no query
    responder" at once. Interest reaches the servers a moment after a subscription (across
    a cluster, eventually), so the client asks again for up to 1.5 s within its timeout;
    with no responder at all it still says so, after that grace."""
    import asyncio
    import time

    from agentledger.handlers.client import QueryUnavailable

    views = view_store_for(settings)
    for projection in ALL_PROJECTIONS:
        views.ensure(projection)
    try:
        async with nats_client(settings) as asker, nats_client(settings) as own:
            asking = asyncio.create_task(
                query_over_nats(asker, settings.subject_prefix, "runs", {})
            )
            await asyncio.sleep(0.3)
            service = QueryService(views=views, nc=own, prefix=settings.subject_prefix)
            await service.start()
            try:
                assert await asking == []
            finally:
                await service.stop()
            started = time.monotonic()
            # Gone: said after the grace ("no query responder"), or after the timeout when
            # the server still held the stopped responder's interest ("no answer").
            with pytest.raises(QueryUnavailable, match=r"no query responder|no answer"):
                await query_over_nats(asker, settings.subject_prefix, "runs", {})
            assert 1.0 < time.monotonic() - started < 7.0
    finally:
        views.close()
