"""One event never stalls the projector, on SQLite and on PostgreSQL: NULs and huge keys
are made fit for the views, a poison event is recorded and skipped (by the projection it
fails only), a store outage is retried and never skipped, costs sum exactly, a view kept
at an older version is folded again, and gaps left by an archive cost no extra passes
each."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from structlog.testing import capture_logs

from agentledger.domain.conversation import Conversation
from agentledger.domain.ids import rejection_id_for
from agentledger.domain.rejection import TaskRejection
from agentledger.domain.run import AgentRun
from agentledger.handlers.projector import Projector
from agentledger.infra.event_store import EventStore, StoreUnavailable
from agentledger.infra.poison_log import PoisonLog
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import ViewStore, view_store_for
from agentledger.projections.base import Projection, ViewCursor
from agentledger.projections.metrics import agent_metrics
from agentledger.projections.runs import get_run, list_runs
from agentledger.projections.views import ALL_PROJECTIONS
from support.harness import corrupt_stored_event, table_contents, wait_for

if TYPE_CHECKING:
    from support.postgres_server import EmbeddedPostgres
    from tests.conftest import Backend, MakeSettings


@pytest.fixture
def settings(backend: Backend, make_settings: MakeSettings) -> Settings:
    return make_settings(backend, nats_url="nats://127.0.0.1:1")  # no broker needed


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    event_store = EventStore(settings)
    yield event_store
    event_store.close()


@pytest.fixture
def views(settings: Settings) -> Iterator[ViewStore]:
    view_store = view_store_for(settings)
    yield view_store
    view_store.close()


def new_run(task_id: str, agent: str = "echo", prompt: str = "p", **kwargs: Any) -> AgentRun:
    return AgentRun(
        task_id=task_id,
        agent=agent,
        prompt=prompt,
        session_id=kwargs.get("session_id"),
        metadata={},
        usage_limits={},
        deadline=None,
        history_version=0,
    )


def save_session(store: EventStore, session_id: str, turns: int = 1) -> None:
    """A session of completed runs with a tool call each (8 notifications a turn)."""
    conversation = Conversation(session_id=session_id)
    for turn in range(turns):
        run = new_run(f"{session_id}-t{turn}", session_id=session_id)
        store.save(run)
        run.send_model_request({"kind": "request", "parts": []})
        run.receive_model_response({"kind": "response", "parts": []}, "test", 20, 5)
        run.start_tool_call("c1", "add", {"a": 1, "b": 2})
        store.save(run)
        run.finish_tool_call("c1", "add", 3)
        run.complete({"sum": 3}, cost_usd=0.01, duration_ms=10.0 * (turn + 1))
        conversation.record_turn(str(run.id), run.task_id, "echo", [{"kind": "request"}])
        store.save(run, conversation)


def drain(projector: Projector) -> int:
    total = 0
    while applied := projector.run_once():
        total += applied
    return total


def rebuild_all(projector: Projector) -> None:
    for projection in projector.projections:
        projector.rebuild(projection.name)


def save_stored_rejection(store: EventStore, key: str, agent: str) -> None:
    """A `TaskRejected` as code before rejections were made storable saved it: the agent
    name exactly as the refused message carried it."""
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-12-02T14:05:48.043077+00:00"},
        "originator_topic": TaskRejection.TOPIC,
        "key": key,
        "task_id": None,
        "agent": agent,
        "subject": "ledger.tasks.run.x",
        "error_kind": "invalid_payload",
        "reason": f"bad\x00{key}",
        "payload_excerpt": "",
    }
    topic = TaskRejection.TaskRejected.TOPIC
    store.insert_transcoded([(rejection_id_for(key), 1, topic, json.dumps(state).encode())])


def test_nul_characters_and_huge_agent_names_are_folded_and_rebuilt_alike(
    store: EventStore, views: ViewStore
) -> None:
    nul = new_run("nul", agent="echo", prompt="before\x00after")
    nul.send_model_request({"parts": [{"part_kind": "user-prompt", "content": "a\x00b"}]})
    nul.complete({"text": "out\x00put"}, cost_usd=0.1, duration_ms=5.0)
    plain_output = new_run("nul-out")
    plain_output.complete("raw\x00string", cost_usd=None, duration_ms=1.0)
    failed = new_run("nul-fail")
    failed.fail("model_error", "bo\x00om", retryable=False, duration_ms=2.0)
    huge = secrets.token_urlsafe(15_000)  # 20 kB that does not compress
    store.save(nul, plain_output, failed)
    save_stored_rejection(store, "nul-agent", "gh\x00st")
    save_stored_rejection(store, "huge-agent", huge)
    save_stored_rejection(store, "huge-agent-2", huge + "x")
    save_session(store, "after")  # later events

    projector = Projector(store, views, [p() for p in ALL_PROJECTIONS], batch=4)
    head = store.max_notification_id()
    assert drain(projector) == head * len(ALL_PROJECTIONS)
    assert projector.lag() == {p.name: 0 for p in ALL_PROJECTIONS}
    assert PoisonLog(views).count() == 0  # made fit, not skipped

    with views.read() as cursor:
        run = get_run(cursor, task_id="nul")
        assert run is not None
        assert run.prompt == "before\ufffdafter"
        assert run.output == {"text": "out\x00put"}  # JSON keeps it, escaped
        out = get_run(cursor, task_id="nul-out")
        assert out is not None and out.output == "raw\x00string"
        fail = get_run(cursor, task_id="nul-fail")
        assert fail is not None and fail.error_message == "bo\ufffdom"
        agents = {m.agent: m for m in agent_metrics(cursor)}
        assert agents["gh\ufffdst"].rejected == 1
        long_keys = [a for a in agents if a.startswith(huge[:100])]
        assert len(long_keys) == 2 and all(len(a) <= 200 for a in long_keys)
        assert sum(agents[a].rejected for a in long_keys) == 2
        assert {r.task_id for r in list_runs(cursor, status="rejected")} == {None}
        assert len(list_runs(cursor, agent=huge)) == 1  # found by its full name
        assert get_run(cursor, task_id="after-t0") is not None

    live = table_contents(views)
    rebuild_all(projector)
    assert table_contents(views) == live


class _Fragile(Projection):
    """Remembers each run requested; fails for good on task `poison`, and for a while
    with a store outage on task `outage`."""

    name: ClassVar[str] = "fragile"
    tables: ClassVar[tuple[str, ...]] = ("al_test_fragile",)
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS al_test_fragile (task_id TEXT PRIMARY KEY)",
    )
    outages = 0

    def apply(self, event: object, cursor: ViewCursor) -> None:
        if not isinstance(event, AgentRun.RunRequested):
            return
        if event.task_id == "poison":
            raise ValueError("this projection cannot take task 'poison'")
        if event.task_id == "outage" and _Fragile.outages > 0:
            _Fragile.outages -= 1
            raise StoreUnavailable("database restarting")
        cursor.execute(
            "INSERT INTO al_test_fragile (task_id) VALUES (?) ON CONFLICT DO NOTHING",
            (event.task_id,),
        )


def _fragile_rows(views: ViewStore) -> list[str]:
    with views.read() as cursor:
        cursor.execute("SELECT task_id FROM al_test_fragile ORDER BY task_id")
        return [row[0] for row in cursor.fetchall()]


def test_a_poison_event_is_recorded_and_skipped_by_the_projection_it_fails_only(
    store: EventStore, views: ViewStore
) -> None:
    _Fragile.outages = 5  # more outages in a row than faults before folding apart
    save_session(store, "before")  # notifications 1-8
    outage = new_run("outage")  # 9-12: a batch of its own
    outage.send_model_request({})
    outage.receive_model_response({}, "test", 1, 1)
    outage.start_tool_call("c1", "add", {})
    store.save(outage)
    poison = new_run("poison")
    store.save(poison)
    poison_id = store.max_notification_id()
    save_session(store, "later")

    projections = [*(p() for p in ALL_PROJECTIONS), _Fragile()]
    projector = Projector(store, views, projections, batch=4, poll_s=0.005)
    seen: list[str] = []
    projector.on_poison = seen.append
    with capture_logs() as logs:
        handle = projector.start_in_thread()
        try:
            assert projector.wait_until(store.max_notification_id(), timeout=30.0)
        finally:
            handle.stop()
    assert projector.last_error is None

    # Only the fragile view skipped it, and said so; the outage was ridden out.
    assert seen == ["fragile"] and projector.poisoned == {"fragile": 1}
    (entry,) = PoisonLog(views).entries()
    assert (entry.consumer, entry.notification_id) == ("fragile", poison_id)
    assert "ValueError: this projection cannot take task 'poison'" in entry.reason
    assert entry.topic == "agentledger.AgentRun.RunRequested"
    assert _fragile_rows(views) == ["before-t0", "later-t0", "outage"]
    with views.read() as cursor:
        assert get_run(cursor, task_id="poison") is not None
    alerts = [e for e in logs if e.get("alert")]
    assert [(e["log_level"], e["notification_id"], e["view"]) for e in alerts] == [
        ("error", poison_id, "fragile")
    ]
    # The outages were logged as such, the poison event never as an unreachable store.
    unreachable = [e for e in logs if e["event"].startswith("projector cannot reach")]
    assert len(unreachable) == 5
    failed = [e for e in logs if e["event"] == "projection failed; retrying"]
    assert len(failed) == 3 and all(e["log_level"] == "error" for e in failed)

    # A rebuild meets it again, records it again and ends where the live view is.
    live = table_contents(views), _fragile_rows(views)
    _Fragile.outages = 0
    for projection in projections:
        projector.rebuild(projection.name)
    assert (table_contents(views), _fragile_rows(views)) == live
    assert [e.consumer for e in PoisonLog(views).entries()] == ["fragile"]


def test_an_undecodable_event_is_skipped_once_later_events_decode(
    settings: Settings, store: EventStore, views: ViewStore
) -> None:
    save_session(store, "s-1", turns=2)  # 16 notifications
    corrupt_stored_event(settings, 5, topic="gone.module:Vanished")  # a ToolCallFinished
    corrupt_stored_event(settings, 13, topic=None)  # another one: state that does not parse
    last = store.max_notification_id()
    corrupt_stored_event(settings, last)  # the newest event: nothing after it decodes yet
    projector = Projector(store, views, [p() for p in ALL_PROJECTIONS], poll_s=0.005)
    handle = projector.start_in_thread()
    try:
        # It goes past 5 and 13 (later events decode) and stops before the last one.
        names = [p.name for p in ALL_PROJECTIONS]
        wait_for(lambda: views.lowest_tracking(names) == last - 1, 30, "5 and 13 skipped")
        assert projector.last_error is not None
        assert {(e.notification_id, e.consumer) for e in PoisonLog(views).entries()} == {
            (n, p.name) for n in (5, 13) for p in ALL_PROJECTIONS
        }
        save_session(store, "s-2")  # now something after it decodes
        assert projector.wait_until(store.max_notification_id(), timeout=30.0)
    finally:
        handle.stop()
    assert sorted({e.notification_id for e in PoisonLog(views).entries()}) == [5, 13, last]
    with views.read() as cursor:
        first = get_run(cursor, task_id="s-1-t0")
        assert first is not None and first.status == "completed"
        assert get_run(cursor, task_id="s-2-t0") is not None

    live = table_contents(views)
    rebuild_all(projector)
    assert table_contents(views) == live


def test_an_error_about_the_written_value_is_not_a_store_outage(
    backend: Backend, views: ViewStore
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's index-row limit")
    import psycopg

    with pytest.raises(psycopg.errors.ProgramLimitExceeded), views.transaction() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE big (k TEXT PRIMARY KEY)")
        cursor.execute("INSERT INTO big VALUES (?)", (secrets.token_urlsafe(15_000),))


def _save_costly_runs(store: EventStore, costs: Sequence[float]) -> None:
    for i, cost in enumerate(costs):
        run = new_run(f"cost-{i}")
        run.complete("ok", cost_usd=cost, duration_ms=1.0 + i % 13)
        store.save(run)


def test_costs_sum_exactly_live_in_one_batch_and_rebuilt(
    store: EventStore, views: ViewStore
) -> None:
    rng = random.Random(3)
    costs = [round(rng.uniform(0, 0.0001), 9) for _ in range(300)]
    float_sum = 0.0
    for cost in costs:
        float_sum += cost
    exact = float(sum(Decimal(repr(c)) for c in costs))
    assert float_sum != exact  # 0.015337083999999999 != 0.015337084: order-dependent
    _save_costly_runs(store, costs)
    one_by_one = Projector(store, views, [p() for p in ALL_PROJECTIONS], batch=1)
    drain(one_by_one)
    live = table_contents(views)
    with views.read() as cursor:
        (echo,) = agent_metrics(cursor)
    assert echo.cost_usd == exact

    in_one_batch = Projector(store, views, [p() for p in ALL_PROJECTIONS], batch=1000)
    in_one_batch.rebuild("metrics")
    assert table_contents(views) == live


def test_a_view_kept_at_an_older_version_is_folded_again(
    store: EventStore, views: ViewStore
) -> None:
    _save_costly_runs(store, [0.1, 0.2, 0.3])
    projector = Projector(store, views, [p() for p in ALL_PROJECTIONS])
    drain(projector)
    expected = table_contents(views)
    # As a metrics view made by 0.1 would be: version 1, float costs, no histogram.
    with views.transaction() as cursor:
        cursor.execute("DELETE FROM al_view_versions WHERE projection = 'metrics'")
        cursor.execute("DROP TABLE al_agent_metrics")
        cursor.execute("DROP TABLE al_metric_latency")
        cursor.execute("CREATE TABLE al_agent_metrics (agent TEXT PRIMARY KEY, cost_usd REAL)")

    upgraded = Projector(store, views, [p() for p in ALL_PROJECTIONS])
    with capture_logs() as logs:
        upgraded.ensure()
    assert [e["view"] for e in logs if e["event"].startswith("view tables are of another")] == [
        "metrics"
    ]
    assert views.tracking("metrics") == 0 and views.tracking("runs") > 0
    drain(upgraded)
    assert table_contents(views) == expected


class _CountingStore:
    """The real store, counting reads of the notification log."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.reads = 0

    def notifications(self, start: int, limit: int) -> Sequence[Any]:
        self.reads += 1
        return self._store.notifications(start, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_rebuild_after_an_archive_spends_no_pass_per_gap(
    store: EventStore, views: ViewStore
) -> None:
    runs = []
    for i in range(60):
        run = new_run(f"arch-{i}")
        run.send_model_request({})
        run.complete("ok", cost_usd=0.001, duration_ms=3.0)
        store.save(run)
        runs.append(run)
    store.delete_aggregates([run.id for run in runs[:-1:2]])  # 30 gaps, as an archive leaves
    counting: Any = _CountingStore(store)
    projector = Projector(counting, views, [p() for p in ALL_PROJECTIONS], batch=1000)
    projector.rebuild("runs")
    # Before: three reads per gap (seen, writers noted, skipped) - 90 here.
    assert counting.reads <= 3
    with views.read() as cursor:
        assert len(list_runs(cursor, limit=100)) == 30
    counting.reads = 0
    assert drain(projector) == 30 * 3 * (len(ALL_PROJECTIONS) - 1)  # the other views
    assert counting.reads <= 4


@pytest.mark.slow
def test_a_postgres_restart_under_the_live_projector_is_retried_never_skipped(
    own_postgres: EmbeddedPostgres, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        "postgres", postgres_dsn=own_postgres.create_database("restart"), nats_url="nats://x:1"
    )
    store, views = EventStore(settings), view_store_for(settings)
    try:
        save_session(store, "before", turns=2)
        projector = Projector(store, views, [p() for p in ALL_PROJECTIONS], poll_s=0.005)
        handle = projector.start_in_thread()
        try:
            assert projector.wait_until(store.max_notification_id(), timeout=10.0)
            own_postgres.stop()
            wait_for(lambda: projector.last_error is not None, 10, "the projector to notice")
            own_postgres.start()
            wait_for(lambda: _reachable(store), 30, "the store to come back")
            save_session(store, "after")
            assert projector.wait_until(store.max_notification_id(), timeout=30.0)
        finally:
            handle.stop()
        assert PoisonLog(views).count() == 0 and projector.poisoned == {}
        with views.read() as cursor:
            assert get_run(cursor, task_id="after-t0") is not None
    finally:
        views.close()
        store.close()


def _reachable(store: EventStore) -> bool:
    try:
        store.max_notification_id()
    except StoreUnavailable:
        return False
    return True
