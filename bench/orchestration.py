#!/usr/bin/env python
"""Orchestration over the bus (issue 11), against calling the same agent in-process:

    python bench/orchestration.py [--backends sqlite,postgres] [--runs 50]

Real `agentledger worker` processes (2 of them), an embedded nats-server and a fresh
SQLite file or PostgreSQL database per backend. A workflow is a graph whose one step
dispatches `n` child agent tasks (`call_agents`) and counts the answers
(`bench/workflows.py`).

1. Overhead per dispatched child: `--runs` workflows of one child (an agent that answers
   at once), one after the other, against `agent.run` of the same agent in this process
   and against the same agent as a plain task over NATS; and a 32-child fan-out against
   32 concurrent in-process `agent.run` calls.
2. Fan-out growth: wall time of one workflow of 1 ... 64 children with 2 workers, for
   the instant agent and for a model that takes 1 s.
3. Slots: 4 children on a 1 s model with 2 workers of 2 slots each finish in about 1 s:
   the waiting parent holds no slot (if it held one, 3 slots for 4 children: 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from rich.table import Table  # noqa: E402

from agentledger.domain.subjects import graph_task_subject, task_subject  # noqa: E402
from bench.e2e import (  # noqa: E402
    Servers,
    _kill_children,
    bench_client,
    console,
    make_config,
    start_workers,
)
from bench.workflows import CATALOG, SLOW_S, quick  # noqa: E402

SIZES = (1, 2, 4, 8, 16, 32, 64)


async def run_workflow(nc: Any, collector: Any, prefix: str, agent: str, n: int) -> float:
    """Publish one workflow of `n` children; its wall time (publish -> outcome), s."""
    task_id = f"wf-{uuid.uuid4().hex[:12]}"
    payload = {"task_id": task_id, "graph": "fan", "inputs": {"agent": agent, "n": n}}
    waiter = collector.wait_for(task_id)
    t0 = time.perf_counter()
    await nc.jetstream().publish(
        graph_task_subject(prefix, "fan"),
        json.dumps(payload).encode(),
        headers={"Nats-Msg-Id": task_id},
    )
    outcome = await asyncio.wait_for(waiter, 300)
    if not outcome.completed:
        raise RuntimeError(f"workflow {task_id} did not complete")
    return time.perf_counter() - t0


async def run_task(nc: Any, collector: Any, prefix: str, agent: str) -> float:
    task_id = f"t-{uuid.uuid4().hex[:12]}"
    payload = {"task_id": task_id, "agent": agent, "prompt": "part 0"}
    waiter = collector.wait_for(task_id)
    t0 = time.perf_counter()
    await nc.jetstream().publish(
        task_subject(prefix, agent), json.dumps(payload).encode(), headers={"Nats-Msg-Id": task_id}
    )
    outcome = await asyncio.wait_for(waiter, 120)
    if not outcome.completed:
        raise RuntimeError(f"task {task_id} did not complete")
    return time.perf_counter() - t0


async def in_process(runs: int) -> tuple[float, float]:
    """ms per `quick.run`, one at a time; ms per call of 32 at once."""
    for i in range(20):
        await quick.run(f"part {i}")
    t0 = time.perf_counter()
    for i in range(runs):
        await quick.run(f"part {i}")
    one = (time.perf_counter() - t0) / runs * 1000
    t0 = time.perf_counter()
    rounds = max(1, runs // 10)
    for _ in range(rounds):
        await asyncio.gather(*(quick.run(f"part {i}") for i in range(32)))
    fan = (time.perf_counter() - t0) / (rounds * 32) * 1000
    return one, fan


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}"


async def one_backend(
    args: argparse.Namespace, servers: Servers, root: Path, backend: str, catalog: Path
) -> dict[str, Any]:
    figures: dict[str, Any] = {"backend": backend}
    env = {"AGENTLEDGER_CATALOG": str(catalog)}
    config = make_config(servers, backend, f"{backend}, 2 workers", root, env)
    prefix = config.settings.subject_prefix
    async with bench_client(config) as (nc, collector):
        workers = await start_workers(config, nc, 2)
        try:
            for _ in range(5):  # warm-up: first imports, first runs of each kind
                await run_workflow(nc, collector, prefix, "quick", 2)
                await run_task(nc, collector, prefix, "quick")
            console.print(f"  {backend}: overhead per child ({args.runs} runs) ...")
            tasks = [await run_task(nc, collector, prefix, "quick") for _ in range(args.runs)]
            one = [await run_workflow(nc, collector, prefix, "quick", 1) for _ in range(args.runs)]
            fan32 = [
                await run_workflow(nc, collector, prefix, "quick", 32)
                for _ in range(max(3, args.runs // 10))
            ]
            figures["task_ms"] = statistics.median(tasks) * 1000
            figures["workflow1_ms"] = statistics.median(one) * 1000
            figures["fan32_per_child_ms"] = statistics.median(fan32) * 1000 / 32
            console.print(f"  {backend}: fan-out growth {args.sizes[0]}..{args.sizes[-1]} ...")
            growth: dict[str, dict[int, float]] = {"quick": {}, "slow": {}}
            for agent in ("quick", "slow"):
                for n in args.sizes:
                    walls = [
                        await run_workflow(nc, collector, prefix, agent, n)
                        for _ in range(args.repeats)
                    ]
                    growth[agent][n] = statistics.median(walls)
            figures["growth"] = growth
        finally:
            workers.stop()
    # 3. Slots: 2 workers x 2 slots, 4 children of 1 s.
    console.print(f"  {backend}: 4 x 1 s children on 2 workers of 2 slots ...")
    env_slots = env | {"AGENTLEDGER_WORKER_CONCURRENCY": "2"}
    config = make_config(servers, backend, f"{backend}, 2 workers x 2 slots", root, env_slots)
    prefix = config.settings.subject_prefix
    async with bench_client(config) as (nc, collector):
        workers = await start_workers(config, nc, 2)
        try:
            await run_workflow(nc, collector, prefix, "quick", 2)  # warm-up
            walls = [
                await run_workflow(nc, collector, prefix, "slow", 4) for _ in range(args.repeats)
            ]
            figures["slots_4x1s_s"] = statistics.median(walls)
            figures["slots_4x1s_all"] = walls
        finally:
            workers.stop()
    return figures


async def main_async(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    catalog = root / "catalog.toml"
    catalog.write_text(CATALOG)
    console.print("  in-process baseline: quick.run ...")
    one, fan = await in_process(args.runs * 4)
    servers = Servers(root=root, sync_always=True)
    results = []
    try:
        for backend in args.backends:
            figures = await one_backend(args, servers, root, backend, catalog)
            figures["in_process_ms"], figures["in_process_fan32_ms"] = one, fan
            results.append(figures)
    finally:
        servers.stop()
    return results


def report(results: list[dict[str, Any]]) -> None:
    table = Table(title="1. Overhead per dispatched child (an agent that answers at once)")
    table.add_column("measurement")
    for r in results:
        table.add_column(r["backend"], justify="right")
    rows = [
        ("in-process `agent.run`, one at a time (baseline), ms", "in_process_ms"),
        ("the agent as a task over NATS (publish -> outcome), ms", "task_ms"),
        ("a workflow of 1 child over NATS (publish -> outcome), ms", "workflow1_ms"),
        ("in-process `agent.run`, 32 at once, ms per call (baseline)", "in_process_fan32_ms"),
        ("a workflow of 32 children, wall ms per child", "fan32_per_child_ms"),
    ]
    for label, key in rows:
        table.add_row(label, *(f"{r[key]:.1f}" for r in results))
    table.add_row(
        "overhead of dispatching one child (workflow of 1 - in-process), ms",
        *(f"{r['workflow1_ms'] - r['in_process_ms']:.1f}" for r in results),
    )
    console.print(table)
    table = Table(title="2. Fan-out wall time with 2 workers (s, median)")
    table.add_column("children")
    for r in results:
        table.add_column(f"{r['backend']}: instant agent", justify="right")
        table.add_column(f"{r['backend']}: {SLOW_S:g} s model", justify="right")
    for n in results[0]["growth"]["quick"]:
        cells = []
        for r in results:
            cells += [f"{r['growth']['quick'][n]:.2f}", f"{r['growth']['slow'][n]:.2f}"]
        table.add_row(str(n), *cells)
    console.print(table)
    table = Table(title="3. A fan-out to 4 agents on a 1 s model, 2 worker processes")
    table.add_column("backend")
    table.add_column("worker slots")
    table.add_column("wall s (median)", justify="right")
    table.add_column("verdict")
    for r in results:
        four = r["growth"]["slow"].get(4)
        if four is not None:
            ok = four < 1.9 * SLOW_S
            table.add_row(
                r["backend"],
                "256 each (default)",
                f"{four:.2f}",
                "PASS: about 1 s, not 4" if ok else "MISS: the children did not run at once",
            )
        wall = r["slots_4x1s_s"]
        ok = wall < 1.9 * SLOW_S
        runs = " ".join(f"{w:.2f}" for w in r["slots_4x1s_all"])
        table.add_row(
            r["backend"],
            "2 each",
            f"{wall:.2f} ({runs})",
            "PASS: about 1 s: the waiting parent holds no slot (holding one: 3 slots, 2 s)"
            if ok
            else "MISS: the 4 children did not all run at once",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/orchestration.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--backends",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=["sqlite", "postgres"],
    )
    parser.add_argument("--runs", type=int, default=50, help="workflows per overhead figure")
    parser.add_argument("--repeats", type=int, default=3, help="workflows per fan-out size")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(SIZES),
        help="children per workflow in the fan-out growth (default 1,2,4,...,64)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="agentledger-orch-"))
    console.print(
        f"[bold]agentledger orchestration bench[/]: backends {', '.join(args.backends)};"
        f" {os.cpu_count()} CPUs; data in {root}"
    )
    started = time.perf_counter()
    try:
        results = asyncio.run(main_async(args, root))
    finally:
        _kill_children()
        shutil.rmtree(root, ignore_errors=True)
    report(results)
    console.print(f"[dim]bench took {time.perf_counter() - started:.0f} s[/]")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
