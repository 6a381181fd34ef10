#!/usr/bin/env python
"""Evaluation as tasks (issue 13), against pydantic-evals' own `Dataset.evaluate` in
this process on the same agent and cases:

    python bench/evaluation.py [--backends sqlite,postgres] [--cases 200] [--concurrency 8]

Real `agentledger worker` processes (2), an embedded nats-server, a fresh SQLite file or
PostgreSQL database per backend. The dataset: `--cases` arithmetic cases for the example
`calculator` (model -> tool -> model), each with `EqualsExpected` and `ToolCalled`
(in-process: `EqualsExpected` only, pydantic-evals has no recorded tool calls).

1. Throughput: one evaluation of every case (each a recorded run over NATS, scored,
   `CaseScored` recorded), wall time from publish to outcome, against
   `Dataset.evaluate(max_concurrency=...)` calling `calculator.run` in-process.
2. Spreading: 16 cases on a model that takes 1 s per response (2 s per run) with
   concurrency 8 on 2 workers: about 4 s, like in-process (bound: 16 x 2 s / 8).
3. Offline: `eval history`'s scoring of recorded runs from their events (runs/s),
   with no model call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from rich.table import Table  # noqa: E402

from agentledger.domain.subjects import eval_subject, results_subject  # noqa: E402
from bench.e2e import (  # noqa: E402
    Servers,
    _kill_children,
    bench_client,
    console,
    make_config,
    start_workers,
)

CATALOG = """
[agents.calculator]
ref = "agentledger.catalog.example_agents:calculator"
price = {{ input_per_mtok = 0.15, output_per_mtok = 0.60 }}
[agents.sleepy_calculator]
ref = "bench.agents:sleepy_calculator"
[datasets.arith]
path = "{arith}"
agent = "calculator"
[datasets.slow]
path = "{slow}"
agent = "sleepy_calculator"
"""


def dataset(n: int, tools: bool = True) -> str:
    lines = ["evaluators: [EqualsExpected]", "cases:"]
    for i in range(n):
        a, b = i, i % 7 + 1
        op, tool, value = ("times", "multiply", a * b) if i % 2 else ("and", "add", a + b)
        prompt = f"{'what is' if i % 2 else 'add'} {a} {op} {b}"
        lines += [
            f"  - name: c{i}",
            f"    inputs: {prompt}",
            f"    expected_output: The result is {float(value)}.",
        ]
        if tools:  # pydantic-evals alone has no recorded tool calls to check
            lines.append(f"    evaluators: [{{ToolCalled: {{tool: {tool}}}}}]")
    return "\n".join(lines) + "\n"


async def in_process(path: Path, concurrency: int) -> tuple[float, int]:
    """pydantic-evals alone: the same cases and evaluators, the agent run in-process."""
    from pydantic_evals import Dataset

    from agentledger.catalog.example_agents import calculator
    from agentledger.handlers.evaluation.evaluators import BUILT_IN

    loaded = Dataset[Any, Any, Any].from_file(path, custom_evaluator_types=list(BUILT_IN))

    async def task(prompt: str) -> Any:
        return (await calculator.run(prompt)).output

    t0 = time.perf_counter()
    report = await loaded.evaluate(task, max_concurrency=concurrency, progress=False)
    wall = time.perf_counter() - t0
    passed = sum(all(a.value for a in case.assertions.values()) for case in report.cases)
    return wall, passed


async def evaluate(nc: Any, prefix: str, dataset_name: str, concurrency: int) -> tuple[float, Any]:
    task_id = f"ev-{uuid.uuid4().hex[:10]}"
    sub = await nc.subscribe(results_subject(prefix, task_id), max_msgs=1)
    t0 = time.perf_counter()
    await nc.jetstream().publish(
        eval_subject(prefix, dataset_name),
        json.dumps(
            {"task_id": task_id, "dataset": dataset_name, "concurrency": concurrency}
        ).encode(),
        headers={"Nats-Msg-Id": task_id},
    )
    msg = await sub.next_msg(timeout=900)
    return time.perf_counter() - t0, json.loads(msg.data)


async def offline(settings: Any, agent: str) -> tuple[int, float]:
    """Score every recorded run of `agent` from its events, as `eval history` does."""
    from agentledger.handlers.evaluation.datasets import catalog_datasets, load_dataset
    from agentledger.handlers.evaluation.scoring import run_facts, score_run
    from agentledger.handlers.queries import answer
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.view_store import view_store_for

    loaded = load_dataset(catalog_datasets(Path(settings.catalog))["arith"])
    by_prompt = {c.prompt: c for c in loaded.cases}
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        t0 = time.perf_counter()
        runs = []
        offset = 0
        while True:
            page = answer(views, "runs", {"agent": agent, "limit": 1000, "offset": offset})
            if not page:
                break
            runs += page
            offset += len(page)

        for row in runs:
            facts = run_facts(store.events(UUID(row["run_id"])))
            case = by_prompt.get(facts.prompt)
            await score_run(
                case=row["task_id"],
                facts=facts,
                evaluators=loaded.evaluators_for(case.name) if case else loaded.evaluators,
                expected_output=case.expected_output if case else None,
            )
        return len(runs), time.perf_counter() - t0
    finally:
        store.close()
        views.close()


async def one_backend(
    args: argparse.Namespace, servers: Servers, root: Path, backend: str
) -> dict[str, Any]:
    folder = root / f"data-{backend}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arith.yaml").write_text(dataset(args.cases))
    (folder / "slow.yaml").write_text(dataset(16))
    catalog = folder / "catalog.toml"
    catalog.write_text(CATALOG.format(arith=folder / "arith.yaml", slow=folder / "slow.yaml"))
    config = make_config(
        servers, backend, f"{backend}, 2 workers", root, {"AGENTLEDGER_CATALOG": str(catalog)}
    )
    prefix = config.settings.subject_prefix
    figures: dict[str, Any] = {"backend": backend}
    async with bench_client(config) as (nc, _):
        workers = await start_workers(config, nc, 2)
        try:
            await evaluate(nc, prefix, "arith", args.concurrency)  # warm-up (imports, schema)
            console.print(f"  {backend}: {args.cases} cases, concurrency {args.concurrency} ...")
            wall, outcome = await evaluate(nc, prefix, "arith", args.concurrency)
            figures["wall_s"] = wall
            figures["passed"] = outcome["passed"]
            figures["cases"] = outcome["cases"]
            console.print(f"  {backend}: 16 cases x 2 s, concurrency 8 ...")
            slow_wall, slow = await evaluate(nc, prefix, "slow", 8)
            figures["slow_wall_s"] = slow_wall
            figures["slow_passed"] = slow["passed"]
        finally:
            workers.stop()
    settings = config.settings.model_copy(update={"catalog": str(catalog)})
    # The projector is not running here: fold the runs view once for the offline section.
    from agentledger.handlers.bootstrap import make_projector
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.view_store import view_store_for

    store, views = EventStore(settings), view_store_for(settings)
    try:
        projector = make_projector(settings, store, views)
        projector.ensure()
        while projector.run_once():
            pass
    finally:
        store.close()
        views.close()
    n, seconds = await offline(settings, "calculator")
    figures["offline_runs"] = n
    figures["offline_runs_per_s"] = n / seconds if seconds else 0.0
    return figures


def report(
    args: argparse.Namespace, baseline: tuple[float, int], results: list[dict[str, Any]]
) -> None:
    table = Table(title=f"Evaluation: {args.cases} cases, concurrency {args.concurrency}")
    for column in (
        "configuration",
        "wall s",
        "ms per case",
        "passed",
        "vs in-process",
        "16 x 2 s cases",
        "offline runs/s",
    ):
        table.add_column(column, justify="right")
    wall, passed = baseline
    table.add_row(
        "pydantic-evals in-process",
        f"{wall:.2f}",
        f"{wall * 1000 / args.cases:.1f}",
        f"{passed}/{args.cases}",
        "1.00x",
        "-",
        "-",
    )
    for r in results:
        table.add_row(
            f"agentledger, {r['backend']}, 2 workers",
            f"{r['wall_s']:.2f}",
            f"{r['wall_s'] * 1000 / args.cases:.1f}",
            f"{r['passed']}/{r['cases']}",
            f"{r['wall_s'] / wall:.2f}x",
            f"{r['slow_wall_s']:.2f} s ({r['slow_passed']}/16)",
            f"{r['offline_runs_per_s']:.0f} ({r['offline_runs']} runs)",
        )
    console.print(table)


async def main_async(
    args: argparse.Namespace, root: Path
) -> tuple[tuple[float, int], list[dict[str, Any]]]:
    path = root / "baseline.yaml"
    path.write_text(dataset(args.cases, tools=False))
    await in_process(path, args.concurrency)  # warm-up
    baseline = await in_process(path, args.concurrency)
    servers = Servers(root=root, sync_always=False)
    try:
        results = [await one_backend(args, servers, root, b) for b in args.backends]
    finally:
        servers.stop()
    return baseline, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/evaluation.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--backends",
        type=lambda s: [b.strip() for b in s.split(",") if b.strip()],
        default=["sqlite", "postgres"],
    )
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="agentledger-eval-"))
    console.print(
        f"[bold]agentledger evaluation bench[/]: backends {', '.join(args.backends)};"
        f" {os.cpu_count()} CPUs; data in {root}"
    )
    started = time.perf_counter()
    try:
        baseline, results = asyncio.run(main_async(args, root))
    finally:
        _kill_children()
        shutil.rmtree(root, ignore_errors=True)
    report(args, baseline, results)
    console.print(f"[dim]bench took {time.perf_counter() - started:.0f} s[/]")
    if args.json is not None:
        args.json.write_text(json.dumps({"baseline": baseline, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
