"""Replay, export and import speed, on SQLite and PostgreSQL, against baselines run in the
same process: bare pydantic-ai `agent.run` (what replay re-executes) and a raw INSERT of
the same number of rows (raw psycopg / sqlite3, what an import writes).

    python bench/replay.py [--runs 300] [--backends sqlite,postgres] [--json]

Runs are recorded with the real runner straight into the store (the write path has its
own benchmark, bench/e2e.py): a mix of calculator runs (model -> tool -> model, 8
events) and three-turn notes sessions. PostgreSQL comes from the pgserver wheel unless
AGENTLEDGER_POSTGRES_DSN names a server (a fresh database is created on it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
# bench.* for the benchmark agents, tests/ for the embedded PostgreSQL launcher
# (support.postgres_server); agentledger itself comes from the installed package.
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402

from agentledger.catalog.example_agents import calculator  # noqa: E402
from agentledger.domain.history_file import HistorySubject, parse_history  # noqa: E402
from agentledger.domain.ids import run_id_for  # noqa: E402
from agentledger.domain.tasks import RunAgent  # noqa: E402
from agentledger.handlers.catalog import Catalog  # noqa: E402
from agentledger.handlers.export import export_aggregates, import_history  # noqa: E402
from agentledger.handlers.replay import recorded_run, replay_history, replay_recorded  # noqa: E402
from agentledger.handlers.runner import AgentRunner  # noqa: E402
from agentledger.infra.event_store import AsyncEventStore, EventStore  # noqa: E402
from agentledger.infra.logging import configure_logging  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402

CATALOG = ROOT / "catalog" / "example.toml"


def tasks(count: int) -> list[RunAgent]:
    """`count` runs: two calculator runs for every three-turn session, in that mix."""
    out: list[RunAgent] = []
    i = 0
    while len(out) < count:
        out.append(RunAgent(task_id=f"b{i}-a", agent="calculator", prompt=f"add {i} and 7"))
        out.append(RunAgent(task_id=f"b{i}-m", agent="calculator", prompt=f"multiply {i} and 3"))
        for turn, prompt in enumerate(["remember alpha", "remember beta", "what do you remember?"]):
            out.append(
                RunAgent(task_id=f"b{i}-n{turn}", agent="notes", prompt=prompt, session_id=f"s{i}")
            )
        i += 1
    return out[:count]


async def record(store: EventStore, catalog: Catalog, work: list[RunAgent]) -> None:
    runner = AgentRunner(store=AsyncEventStore(store, 4), catalog=catalog)
    for task in work:  # sessions in order; one at a time keeps the log tidy
        await runner.run(task, first_delivery=True)


async def bare_runs(count: int) -> float:
    """Bare pydantic-ai: the calculator's `agent.run`, sequential; runs/s."""
    started = time.perf_counter()
    for i in range(count):
        await calculator.run(f"add {i} and 7")
    return count / (time.perf_counter() - started)


def raw_insert_baseline(settings: Settings, rows: list[tuple[UUID, int, str, bytes]]) -> float:
    """One transaction inserting the same rows into a bare table; rows/s."""
    started = time.perf_counter()
    if settings.postgres_dsn is not None:
        with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_raw (id uuid, v int, topic text, state bytea,"
                " n bigserial, PRIMARY KEY (id, v))"
            )
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO bench_raw (id, v, topic, state) VALUES (%s, %s, %s, %s)", rows
                )
            conn.commit()
    else:
        path = Path(settings.sqlite_file).with_name("raw.db")
        conn = sqlite3.connect(path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id text, v int, topic text, state blob,"
            " PRIMARY KEY (id, v))"
        )
        started = time.perf_counter()
        with conn:
            conn.executemany(
                "INSERT INTO bench_raw VALUES (?, ?, ?, ?)",
                [(str(a), b, c, d) for a, b, c, d in rows],
            )
        conn.close()
    return len(rows) / (time.perf_counter() - started)


async def measure(backend: str, settings: Settings, target: Settings, count: int) -> dict[str, Any]:
    catalog = Catalog.load(CATALOG)
    work = tasks(count)
    store = EventStore(settings)
    try:
        await record(store, catalog, work)
        ids = [run_id_for(t.task_id) for t in work]
        events = sum(len(store.events(i)) for i in ids)

        started = time.perf_counter()
        loaded = [recorded_run(store, i) for i in ids]
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        reports = [await replay_recorded(r, catalog) for r in loaded]
        replay_s = time.perf_counter() - started
        assert all(r.identical for r in reports), "a benchmark run did not replay identical"

        started = time.perf_counter()
        document = export_aggregates(
            store, ids, HistorySubject(kind="archive", id="bench"), catalog
        )
        text = document.to_json()
        export_s = time.perf_counter() - started
    finally:
        store.close()

    started = time.perf_counter()
    file_reports = await replay_history(parse_history(text), catalog)
    file_s = time.perf_counter() - started
    assert all(r.identical for r in file_reports)

    fresh = EventStore(target)
    try:
        started = time.perf_counter()
        imported = import_history(fresh, parse_history(text))
        import_s = time.perf_counter() - started
    finally:
        fresh.close()
    assert imported.imported_events == sum(len(a.events) for a in document.aggregates)
    rows = [
        (uuid.uuid4(), e.version, e.topic, json.dumps(e.state).encode())
        for a in document.aggregates
        for e in a.events
    ]
    raw = raw_insert_baseline(target, rows)
    return {
        "backend": backend,
        "runs": count,
        "events": events,
        "load_runs_per_s": count / load_s,
        "replay_runs_per_s": count / replay_s,
        "replay_events_per_s": events / replay_s,
        "replay_file_runs_per_s": count / file_s,
        "export_events_per_s": imported.imported_events / export_s,
        "export_bytes": len(text.encode()),
        "import_events_per_s": imported.imported_events / import_s,
        "raw_insert_rows_per_s": raw,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="Recorded runs per backend.")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args(argv)
    configure_logging("console", "WARNING")
    root = Path(tempfile.mkdtemp(prefix="agentledger-bench-replay-"))
    postgres = None
    results: dict[str, Any] = {"bare_pydantic_ai_runs_per_s": asyncio.run(bare_runs(args.runs))}
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                settings = Settings(data_dir=root, sqlite_path=root / "a.db", postgres_dsn=None)
                target = Settings(data_dir=root, sqlite_path=root / "b.db", postgres_dsn=None)
            else:
                import os

                external = os.environ.get("AGENTLEDGER_POSTGRES_DSN")
                if external:
                    from support.postgres_server import create_database_on

                    dsn_a = create_database_on(external, f"bench_{uuid.uuid4().hex[:8]}")
                    dsn_b = create_database_on(external, f"bench_{uuid.uuid4().hex[:8]}")
                else:
                    from support.postgres_server import EmbeddedPostgres

                    pg_root = Path(tempfile.mkdtemp(prefix="agentledger-bench-pg-"))
                    postgres = EmbeddedPostgres(pg_root / "data").start()
                    dsn_a = postgres.create_database("bench_a")
                    dsn_b = postgres.create_database("bench_b")
                settings = Settings(data_dir=root, postgres_dsn=dsn_a)
                target = Settings(data_dir=root, postgres_dsn=dsn_b)
            results[backend] = asyncio.run(measure(backend, settings, target, args.runs))
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    bare = results["bare_pydantic_ai_runs_per_s"]
    print(f"bare pydantic-ai agent.run (calculator, sequential): {bare:,.0f} runs/s")
    header = (
        f"{'backend':<9} {'runs':>5} {'events':>7} {'load r/s':>9} {'replay r/s':>10}"
        f" {'replay ev/s':>11} {'vs bare':>7} {'file r/s':>9} {'export ev/s':>11}"
        f" {'import ev/s':>11} {'raw ins/s':>10} {'import/raw':>10}"
    )
    print(header)
    for backend in args.backends.split(","):
        r = results[backend]
        print(
            f"{backend:<9} {r['runs']:>5} {r['events']:>7} {r['load_runs_per_s']:>9,.0f}"
            f" {r['replay_runs_per_s']:>10,.0f} {r['replay_events_per_s']:>11,.0f}"
            f" {r['replay_runs_per_s'] / bare:>6.2f}x {r['replay_file_runs_per_s']:>9,.0f}"
            f" {r['export_events_per_s']:>11,.0f} {r['import_events_per_s']:>11,.0f}"
            f" {r['raw_insert_rows_per_s']:>10,.0f}"
            f" {r['import_events_per_s'] / r['raw_insert_rows_per_s']:>9.2f}x"
        )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
