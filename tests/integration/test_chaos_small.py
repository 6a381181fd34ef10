"""A small run of bench/chaos.py: worker and projector processes on PostgreSQL while a
worker is SIGKILLed and nats-server and PostgreSQL are restarted. Every task gets an
outcome, nothing recorded happens twice, no session turn is lost, the views equal a
rebuild. The full run (1,000 tasks, 5 kills) is in BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from agentledger.infra.nats_server import EmbeddedNats
from support.harness import REPO_ROOT
from support.postgres_server import EmbeddedPostgres

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_a_small_chaos_run_loses_nothing_and_repeats_nothing_recorded(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from bench.chaos import ChaosPlan, run_chaos

    # A server of the test's own: the session's shared one must not be restarted.
    nats_server = EmbeddedNats(store_dir=tmp_path / "nats")
    await asyncio.to_thread(nats_server.start)
    try:
        report = await run_chaos(
            ChaosPlan(tasks=60, rate=4.0, sessions=3, worker_kills=1),
            nats_server=nats_server,
            postgres=own_postgres,
            workdir=tmp_path / "run",
        )
    finally:
        await asyncio.to_thread(nats_server.stop)

    assert report.problems() == []
    assert report.tasks_published == report.with_outcome == 60
    assert report.without_outcome == []
    assert report.tool_effects.unexplained == [] and report.model_steps.unexplained == []
    assert report.recorded_twice == []
    assert report.lost_turns == [] and report.recall_mismatches == []
    assert report.views_equal_rebuild
    assert [d.kind for d in report.disruptions if d.done_s is not None] == [
        "nats-server restart",
        "worker SIGKILL",
        "PostgreSQL restart",
    ]
