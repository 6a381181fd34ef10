#!/usr/bin/env python
"""Where a worker's CPU per run goes, one layer at a time, in ONE process (no NATS).

    python bench/cpu_ladder.py [--tasks 1000] [--concurrency 1,16,256] [--no-postgres]

Rungs, each on the `calculator` agent (model -> tool -> model):

  1. bare `agent.run`
  2. `agent.iter` under `agent.override(toolsets=...)`, stepping node by node (what the
     runner does, without recording)
  3. `AgentRunner.run` on eventsourcing's in-memory (POPO) recorder: + events, aggregate,
     recording toolset, saves through the store thread pool
  4. `AgentRunner.run` on a SQLite file
  5. `AgentRunner.run` on PostgreSQL (embedded, fresh database)

CPU = user + system seconds of this process (all threads) / runs. Compare with the
worker's CPU per run printed by bench/e2e.py: the difference is FastStream, NATS and
publishing the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# bench.* for the benchmark agents, tests/ for the embedded PostgreSQL launcher
# (support.postgres_server); agentledger itself comes from the installed package.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.catalog.example_agents import calculator  # noqa: E402
from agentledger.domain.tasks import RunAgent  # noqa: E402
from agentledger.handlers.catalog import Catalog  # noqa: E402
from agentledger.handlers.runner import AgentRunner  # noqa: E402
from agentledger.infra.event_store import AsyncEventStore, EventStore  # noqa: E402
from agentledger.infra.logging import configure_logging  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 140)
CATALOG = Path(__file__).resolve().parent / "catalog.toml"
_ids = itertools.count()


def in_memory_store(threads: int) -> AsyncEventStore:
    """An `EventStore` on eventsourcing's POPO recorder (no database at all)."""
    from agentledger.infra import event_store

    store = EventStore.__new__(EventStore)
    store._app = event_store._Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    store.name = event_store.APPLICATION_NAME
    return AsyncEventStore(store, threads)


def runner_on(store: AsyncEventStore) -> Callable[[int], Awaitable[Any]]:
    runner = AgentRunner(store=store, catalog=Catalog.load(CATALOG))

    async def run(i: int) -> None:
        task = RunAgent(task_id=f"ladder-{next(_ids)}", agent="calculator", prompt=f"add {i} and 3")
        # As a worker runs a task's first delivery: no read before the run is created.
        outcome = await runner.run(task, first_delivery=True)
        assert outcome.status == "completed", outcome

    return run


async def bare(i: int) -> None:
    await calculator.run(f"add {i} and 3")


async def iter_override(i: int) -> None:
    with calculator.override(tools=[], toolsets=calculator.toolsets):
        async with calculator.iter(f"add {i} and 3") as run:
            async for _node in run:
                pass


async def measure(
    fn: Callable[[int], Awaitable[Any]], concurrency: int, n: int
) -> tuple[float, float]:
    """(runs/s, CPU ms per run)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(min(100, n))))  # warm-up
    cpu0 = sum(os.times()[:2])
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    return n / wall, (sum(os.times()[:2]) - cpu0) / n * 1000


async def main_async(args: argparse.Namespace, root: Path) -> None:
    rungs: list[tuple[str, Callable[[int], Awaitable[Any]]]] = [
        ("1. bare agent.run", bare),
        ("2. agent.iter + override(toolsets), node by node", iter_override),
        ("3. AgentRunner.run, in-memory recorder", runner_on(in_memory_store(args.store_threads))),
    ]
    sqlite_settings = Settings(data_dir=root / "sqlite", log_level="WARNING")
    stores = [AsyncEventStore(EventStore(sqlite_settings), args.store_threads)]
    rungs.append(("4. AgentRunner.run, SQLite", runner_on(stores[-1])))
    postgres = None
    if args.postgres:
        from support.postgres_server import EmbeddedPostgres

        pg_root = Path(tempfile.mkdtemp(prefix="agentledger-ladder-pg-"))
        postgres = EmbeddedPostgres(pg_root / "data").start()
        dsn = postgres.create_database("ladder")
        pg_settings = Settings(postgres_dsn=dsn, log_level="WARNING")
        stores.append(AsyncEventStore(EventStore(pg_settings), args.store_threads))
        rungs.append(("5. AgentRunner.run, PostgreSQL", runner_on(stores[-1])))
    table = Table(title=f"CPU per calculator run, one process ({os.cpu_count()} CPUs)")
    table.add_column("rung")
    for c in args.concurrency:
        table.add_column(f"conc {c}: runs/s", justify="right")
        table.add_column(f"conc {c}: CPU ms/run", justify="right")
    try:
        for name, fn in rungs:
            cells = []
            for c in args.concurrency:
                rate, cpu = await measure(fn, c, args.tasks)
                cells += [f"{rate:.1f}", f"{cpu:.2f}"]
            console.print(f"  {name}: {', '.join(cells)}")
            table.add_row(name, *cells)
    finally:
        for store in stores:
            store.close()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(pg_root, ignore_errors=True)
    console.print(table)
    console.print(
        "[dim]CPU = user+system time of this process (event loop and store threads) / runs. "
        "The machine is shared; runs/s suffers from other load more than CPU/run does.[/]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/cpu_ladder.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 256]
    )
    parser.add_argument("--store-threads", type=int, default=8)
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    args = parser.parse_args(argv)
    configure_logging("console", "WARNING")
    root = Path(tempfile.mkdtemp(prefix="agentledger-ladder-"))
    try:
        asyncio.run(main_async(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
