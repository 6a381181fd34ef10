"""Retention: finished runs archived to verified files and removed from the hot store,
views untouched, projectors carrying on, archives replayable and importable; the store
size report by aggregate type."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from agentledger.domain.history_file import HistoryDocument, parse_history
from agentledger.domain.ids import run_id_for
from agentledger.domain.tasks import RunAgent
from agentledger.handlers.bootstrap import make_projector
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.export import import_history
from agentledger.handlers.queries import answer
from agentledger.handlers.replay import replay_history, replay_run
from agentledger.handlers.retention import archive_runs, store_report
from agentledger.handlers.runner import AgentRunner
from agentledger.infra.archive_log import ArchiveLog
from agentledger.infra.event_store import AsyncEventStore, EventStore
from agentledger.infra.settings import Settings
from agentledger.infra.view_store import view_store_for
from support.harness import record_tasks as record
from support.harness import running_projector, settings_env, table_contents, wait_for
from support.replay_agents import varied_tasks, write_replay_catalog

pytestmark = pytest.mark.asyncio


def load(path: str) -> HistoryDocument:
    return parse_history(Path(path).read_bytes(), path)


@pytest.fixture
def settings(make_settings, backend, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(backend, catalog=str(write_replay_catalog(tmp_path)), ack_wait_s=5)


async def test_archive_removes_only_verified_runs_and_leaves_the_views_alone(
    settings: Settings, tmp_path: Path
) -> None:
    tasks = varied_tasks("r")
    catalog = Catalog.load(settings.catalog)
    out = tmp_path / "archive"
    async with running_projector(settings, relay=False, queries=False) as projector:
        assert projector.store is not None
        await record(settings, tasks)
        assert projector.wait_until(projector.store.max_notification_id(), 15)
        store = EventStore(settings)
        views = view_store_for(settings)
        try:
            before = table_contents(views)
            sizes = {s.aggregate_type: s for s in store_report(store)}
            assert sizes["AgentRun"].aggregates == 20
            assert sizes["Conversation"].aggregates == 2
            assert sizes["AgentRun"].bytes > 0 and sizes["AgentRun"].events > 100

            # Nothing is older than 30 days yet.
            young = archive_runs(store, views, out, older_than_days=30, batch=7)
            assert (young.candidates, young.archived_runs) == (0, 0)
            assert not out.exists()

            later = datetime.now(UTC) + timedelta(days=31)
            dry = archive_runs(store, views, out, older_than_days=30, now=later, dry_run=True)
            assert dry.candidates == 20 and dry.archived_runs == 0 and not out.exists()

            report = archive_runs(
                store, views, out, older_than_days=30, now=later, batch=7, catalog=catalog
            )
            assert report.archived_runs + len(report.kept) == 20
            assert len(report.kept) <= 1  # the run holding the newest event, if any
            assert len(report.files) == 3
            left = [t.task_id for t in tasks if store.events(run_id_for(t.task_id))]
            assert [str(run_id_for(t)) for t in left] == report.kept
            sizes = {s.aggregate_type: s for s in store_report(store)}
            assert (sizes["AgentRun"].aggregates if "AgentRun" in sizes else 0) == len(report.kept)
            assert sizes["Conversation"].aggregates == 2  # sessions are never archived

            # The views are as they were; the archive log knows where each run went.
            assert table_contents(views) == before
            log = ArchiveLog(views)
            assert log.count() == report.archived_runs
            archived_task = next(t.task_id for t in tasks if t.task_id not in left)
            assert log.where(str(run_id_for(archived_task))) in report.files

            # Every archived run replays from its file alone.
            for path in report.files:
                replayed = await replay_history(load(path), catalog)
                assert replayed and all(r.identical for r in replayed)

            # The projector carries on past the removed events; a session takes its turn.
            await record(
                settings,
                [
                    RunAgent(task_id="r-after", agent="calculator", prompt="add 1 and 1"),
                    RunAgent(
                        task_id="r-turn4",
                        agent="notes",
                        prompt="what do you remember?",
                        session_id="r-session",
                    ),
                ],
            )
            assert projector.wait_until(store.max_notification_id(), 15)
            runs = {r["task_id"]: r for r in answer(views, "runs", {"limit": 100})}
            assert runs["r-after"]["status"] == "completed"
            assert runs["r-turn4"]["output"].startswith("You told me: the deploy is on Friday")
            assert len(runs) == 22

            # A later pass takes what was kept and the two new runs (less the newest
            # event's); runs archived before are not taken twice.
            again = archive_runs(store, views, out, older_than_days=30, now=later)
            assert again.candidates == len(report.kept) + 2
            assert again.archived_runs == again.candidates - len(again.kept)
            assert ArchiveLog(views).count() == report.archived_runs + again.archived_runs

            # Importing the archives brings the runs back, replayable from the store; the
            # projectors fold the re-imported events without counting anything twice.
            settled = table_contents(views)
            for path in report.files + again.files:
                import_history(store, load(path))
            assert projector.wait_until(store.max_notification_id(), 15)
            assert table_contents(views) == settled
            for task in tasks:
                assert (await replay_run(store, run_id_for(task.task_id), catalog)).identical
        finally:
            views.close()
            store.close()


async def test_the_run_with_the_newest_event_is_never_removed(settings: Settings) -> None:
    await record(settings, [RunAgent(task_id="only", agent="greeter", prompt="hi")])
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        async with running_projector(settings, relay=False, queries=False) as projector:
            assert projector.wait_until(store.max_notification_id(), 15)
        assert store.newest_aggregate_id() == UUID(str(run_id_for("only")))
        later = datetime.now(UTC) + timedelta(days=2)
        report = archive_runs(
            store, views, Path(settings.data_dir) / "a", older_than_days=1, now=later
        )
        assert report.archived_runs == 0 and report.kept == [str(run_id_for("only"))]
        assert store.events(run_id_for("only"))
    finally:
        views.close()
        store.close()


def _start_and_kill(args: list[str], env: dict[str, str], out: Path) -> None:
    """Start `agentledger archive`, SIGKILL it once it has written five files."""
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: len(list(out.glob("archive-*.json"))) >= 5 or process.poll() is not None,
            60,
            "the archive to write five files",
            0.005,
        )
        assert process.poll() is None, "the archive finished before it could be killed"
    finally:
        process.kill()  # SIGKILL
        process.wait()


@pytest.mark.slow
async def test_an_archive_killed_midway_loses_nothing_and_a_rerun_finishes(
    settings: Settings, tmp_path: Path
) -> None:
    catalog = Catalog.load(settings.catalog)
    store = EventStore(settings)
    views = view_store_for(settings)
    tasks = [
        RunAgent(task_id=f"k{i:02d}", agent="calculator", prompt=f"add {i} and 1")
        for i in range(60)
    ]
    writer = AsyncEventStore(EventStore(settings), 2)
    try:
        runner = AgentRunner(store=writer, catalog=catalog)
        for task in tasks:
            await runner.run(task, first_delivery=True)
        projector = make_projector(settings, store, views)
        while projector.run_once():
            pass
    finally:
        writer.close()
        views.close()
        store.close()
    out = tmp_path / "archive"
    env = settings_env(settings)
    command = [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", "archive"]
    args = [*command, "--older-than-days", "0", "--batch", "1", "--out", str(out), "--json"]
    await asyncio.to_thread(_start_and_kill, args, env, out)

    def holders() -> tuple[set[str], set[str]]:
        """Task ids still in the store; task ids in a complete archive file."""
        in_files: set[str] = set()
        for path in out.glob("archive-*.json"):  # never a *.part: those are unfinished
            for aggregate in load(str(path)).aggregates:
                first = aggregate.events[0].state
                in_files.add(first["task_id"])
        check = EventStore(settings)
        try:
            in_store = {t.task_id for t in tasks if check.events(run_id_for(t.task_id))}
        finally:
            check.close()
        return in_store, in_files

    in_store, in_files = holders()
    assert in_store | in_files == {t.task_id for t in tasks}  # nothing lost
    assert in_store and in_files  # it really stopped halfway

    rerun = await asyncio.to_thread(subprocess.run, args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    in_store, in_files = holders()
    assert in_files == {t.task_id for t in tasks} - in_store
    assert len(in_store) <= 1  # at most the run holding the newest event

    # Every file still replays, and all of them together restore the store.
    fresh = EventStore.in_memory()
    for path in sorted(out.glob("archive-*.json")):
        import_history(fresh, load(str(path)))
    assert {t.task_id for t in tasks if fresh.events(run_id_for(t.task_id))} == in_files
    for path in sorted(out.glob("archive-*.json")):
        assert all(r.identical for r in await replay_history(load(str(path)), catalog))


async def test_runs_the_memory_view_has_not_folded_are_not_archived(settings: Settings) -> None:
    from agentledger.handlers.bootstrap import make_memory_projector

    tasks = varied_tasks("m")[:4]
    await record(settings, tasks)
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        main = make_projector(settings, store, views)
        while main.run_once():
            pass
        memory = make_memory_projector(settings, store, views)
        memory.ensure()  # the memory view exists, but has folded nothing yet
        later = datetime.now(UTC) + timedelta(days=31)
        held = archive_runs(store, views, settings.archive_path, older_than_days=30, now=later)
        assert held.candidates > 0 and held.archived_runs == 0
        while memory.run_once():
            pass
        done = archive_runs(store, views, settings.archive_path, older_than_days=30, now=later)
        assert done.archived_runs > 0
    finally:
        views.close()
        store.close()
