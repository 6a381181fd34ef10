#!/usr/bin/env python
"""Durable graph overhead against plain pydantic-graph in memory, in one run:

    python bench/graph.py [--runs 200] [--no-postgres]

1. Per-step overhead: a 10-step graph of trivial steps, run `--runs` times one after the
   other, by plain `Graph.run` in memory and by `GraphRunner` (every step recorded and
   checkpointed) on SQLite and on PostgreSQL. Prints ms per run and per step.
2. Fan-out: 8 parallel agent steps on a model that takes 1 s, as recorded agent runs
   (`agent_step`) against `agent.run` in memory: wall time (target: within 1.2x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.domain.graphs.tasks import RunGraph  # noqa: E402
from agentledger.handlers.catalog import Catalog  # noqa: E402
from agentledger.handlers.graphs.runner import GraphRunner  # noqa: E402
from agentledger.handlers.runner import AgentRunner  # noqa: E402
from agentledger.infra.event_store import AsyncEventStore, EventStore  # noqa: E402
from agentledger.infra.logging import configure_logging  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402
from bench.graphs import STEPS, fan_memory, line  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 140)
CATALOG = """
[agents.slow]
ref = "bench.graphs:slow_agent"

[graphs.line]
ref = "bench.graphs:line"

[graphs.fan]
ref = "bench.graphs:fan_durable"
"""


def cpu() -> float:
    return sum(os.times()[:2])


async def timed(fn: Any, runs: int) -> tuple[float, float]:
    """(wall ms per run, CPU ms per run)."""
    for i in range(min(20, runs)):
        await fn(-1 - i)  # warm-up
    c0, t0 = cpu(), time.perf_counter()
    for i in range(runs):
        await fn(i)
    return (time.perf_counter() - t0) / runs * 1000, (cpu() - c0) / runs * 1000


def graph_runner(settings: Settings) -> tuple[GraphRunner, AsyncEventStore]:
    store = AsyncEventStore(EventStore(settings), 8)
    catalog = Catalog.load(settings.catalog)
    agents = AgentRunner(store=store, catalog=catalog)
    return GraphRunner(store=store, catalog=catalog, agents=agents), store


async def main_async(args: argparse.Namespace, root: Path) -> None:
    catalog = root / "catalog.toml"
    catalog.write_text(CATALOG)
    backends: list[tuple[str, Settings]] = [
        ("SQLite", Settings(data_dir=root / "sqlite", catalog=str(catalog), log_level="WARNING"))
    ]
    postgres = None
    if args.postgres:
        from support.postgres_server import EmbeddedPostgres

        postgres = EmbeddedPostgres(root / "pg").start()
        dsn = postgres.create_database("graphbench")
        backends.append(
            ("PostgreSQL", Settings(postgres_dsn=dsn, catalog=str(catalog), log_level="WARNING"))
        )
    try:
        table = Table(title=f"Durable graphs against plain pydantic-graph ({os.cpu_count()} CPUs)")
        for column in ("what", "wall ms/run", "CPU ms/run", "overhead per step (wall)"):
            table.add_column(column, justify="right" if column != "what" else "left")

        async def plain(i: int) -> None:
            assert await line.run(inputs=i) == i + STEPS  # type: ignore[attr-defined]

        base_wall, base_cpu = await timed(plain, args.runs)
        table.add_row(
            "10 steps, plain Graph.run in memory", f"{base_wall:.2f}", f"{base_cpu:.2f}", "baseline"
        )
        stores = []
        for name, settings in backends:
            runner, store = graph_runner(settings)
            stores.append(store)

            async def durable(i: int, runner: GraphRunner = runner, name: str = name) -> None:
                task = RunGraph(task_id=f"line-{name}-{i}", graph="line", inputs=i)
                outcome = await runner.run(task)
                assert outcome.status == "completed", outcome

            wall, cpu_ms = await timed(durable, args.runs)
            per_step = (wall - base_wall) / STEPS
            table.add_row(
                f"10 steps, GraphRunner on {name}",
                f"{wall:.2f}",
                f"{cpu_ms:.2f}",
                f"+{per_step:.2f} ms",
            )
        items = [f"item-{i}" for i in range(8)]
        t0 = time.perf_counter()
        await fan_memory.run(inputs=items)  # type: ignore[attr-defined]
        memory_s = time.perf_counter() - t0
        table.add_row("fan-out 8 x 1 s agent, in memory", f"{memory_s * 1000:.0f}", "", "baseline")
        for name, settings in backends:
            runner, _ = graph_runner(settings)
            t0 = time.perf_counter()
            outcome = await runner.run(RunGraph(task_id=f"fan-{name}", graph="fan", inputs=items))
            wall_s = time.perf_counter() - t0
            assert outcome.status == "completed", outcome
            table.add_row(
                f"fan-out 8 x 1 s agent steps, {name}",
                f"{wall_s * 1000:.0f}",
                "",
                f"{wall_s / memory_s:.3f}x (target <= 1.2x)",
            )
        console.print(table)
        for store in stores:
            store.close()
    finally:
        if postgres is not None:
            postgres.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/graph.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    args = parser.parse_args(argv)
    configure_logging("console", "WARNING")
    root = Path(tempfile.mkdtemp(prefix="agentledger-graph-bench-"))
    try:
        asyncio.run(main_async(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
