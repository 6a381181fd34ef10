#!/usr/bin/env python
"""The web dashboard's live latency: from a run's last event being committed to a
browser showing the run as completed.

    python bench/dashboard.py [--rate 50] [--seconds 20] [--backend sqlite|postgres]

An embedded nats-server, one `agentledger worker` process and one `agentledger project`
process serving the dashboard (`AGENTLEDGER_DASHBOARD_PORT`: the projections, the event
relay and the dashboard in one process, as deployed), the benchmark catalog's
`calculator`, and headless Chromium (Debian's `chromium`, driven by Playwright) with the
dashboard open. Tasks are published over JetStream at `--rate` per second for
`--seconds`.

- dashboard: the time from a run's `RunCompleted` event (its stored timestamp, taken by
  the worker as it records the event) to the page rendering that run as completed (the
  page's script records `Date.now()` then, in `window.__dashboardRenders`). On one
  machine, so both clocks are the same clock.
- baseline: the same event's timestamp to its arrival at a plain core-NATS subscriber
  of the relay's subject (`<prefix>.events.AgentRun.RunCompleted`) in this process: what
  the projector and the relay take. The dashboard adds its fold, the server-sent event
  and the browser's render on top.

Target: p99 under 500 ms at 50 runs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from nats.aio.msg import Msg  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.infra.nats_server import free_port  # noqa: E402
from bench.e2e import (  # noqa: E402
    Servers,
    _kill_children,
    bench_client,
    console,
    cpu_seconds,
    make_config,
    percentile,
    spawn,
    start_workers,
    stop_process,
    task_payload,
)

TARGET_P99_MS = 500.0


def _epoch_ms(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp() * 1000


async def _wait_dashboard(port: int, timeout: float = 60.0) -> None:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(ready):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard did not answer on port {port} in {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    servers = Servers(root=root, sync_always=True)
    port = free_port()
    try:
        config = make_config(
            servers,
            args.backend,
            "dashboard",
            root,
            {
                "AGENTLEDGER_DASHBOARD_PORT": str(port),
                "AGENTLEDGER_MEMORY_ENABLED": "false",
            },
        )
        prefix = config.settings.subject_prefix
        count = int(args.rate * args.seconds)
        async with bench_client(config) as (nc, collector):
            workers = await start_workers(config, nc, args.workers)
            projector = spawn("project", config, Path(config.settings.data_dir) / "project.log")
            try:
                await _wait_dashboard(port)
                relayed: dict[str, float] = {}

                async def on_completed(msg: Msg) -> None:
                    arrived = time.time() * 1000
                    record = json.loads(msg.data)
                    relayed[record["aggregate_id"]] = arrived - _epoch_ms(record["timestamp"])

                await nc.subscribe(f"{prefix}.events.AgentRun.RunCompleted", cb=on_completed)
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=chromium)
                    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                    await page.goto(f"http://127.0.0.1:{port}/")
                    await page.wait_for_selector("#connection.pill-live", timeout=30_000)
                    cpu_before = cpu_seconds(projector.pid) or 0.0
                    js = nc.jetstream()
                    start = time.perf_counter()
                    for i in range(count):
                        delay = start + i / args.rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        task_id = f"dash-{i}"
                        await js.publish(
                            f"{prefix}.tasks.run.calculator",
                            task_payload(task_id, "calculator", i),
                            headers={"Nats-Msg-Id": task_id},
                        )
                    offered_s = time.perf_counter() - start
                    shown: list[dict[str, Any]] = []
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        shown = await page.evaluate(
                            "window.__dashboardRenders.filter(r => r.status === 'completed'"
                            " && r.committed_at)"
                        )
                        if len({r["run_id"] for r in shown}) >= count:
                            break
                        await asyncio.sleep(0.5)
                    cpu_projector = (cpu_seconds(projector.pid) or 0.0) - cpu_before
                    if args.screenshot is not None:
                        await page.screenshot(path=str(args.screenshot))
                    await browser.close()
                completed = sum(1 for o in collector.outcomes.values() if o.completed)
            finally:
                stop_process(projector)
                workers.stop()
    finally:
        servers.stop()
    first = {}
    for r in shown:
        first.setdefault(r["run_id"], r["shown_at"] - _epoch_ms(r["committed_at"]))
    return {
        "tasks": count,
        "completed": completed,
        "offered_per_s": count / offered_s,
        "dashboard_ms": list(first.values()),
        "relay_ms": list(relayed.values()),
        "projector_cpu_s": cpu_projector,
    }


def report(args: argparse.Namespace, figures: dict[str, Any]) -> bool:
    dashboard, relay = figures["dashboard_ms"], figures["relay_ms"]
    table = Table(
        title=f"Dashboard live latency: {figures['tasks']} calculator runs at"
        f" {figures['offered_per_s']:.1f}/s, {args.backend}"
    )
    for column in ("path", "runs seen", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, values in (
        ("commit -> browser shows it (dashboard)", dashboard),
        ("commit -> relay subscriber (baseline)", relay),
    ):
        if values:
            table.add_row(
                name,
                str(len(values)),
                f"{percentile(values, 50):.0f}",
                f"{percentile(values, 90):.0f}",
                f"{percentile(values, 99):.0f}",
                f"{max(values):.0f}",
            )
        else:
            table.add_row(name, "0", "-", "-", "-", "-")
    console.print(table)
    console.print(
        f"outcomes completed: {figures['completed']} of {figures['tasks']}; projector process"
        f" (projections + relay + dashboard) CPU: {figures['projector_cpu_s']:.1f} s"
    )
    ok = bool(dashboard) and len(dashboard) == figures["tasks"]
    if dashboard:
        p99 = percentile(dashboard, 99)
        added = percentile(dashboard, 50) - percentile(relay, 50) if relay else float("nan")
        ok = ok and p99 < TARGET_P99_MS
        console.print(
            f"dashboard p99 {p99:.0f} ms (target < {TARGET_P99_MS:.0f} ms):"
            f" {'met' if ok else 'NOT met'}; the dashboard adds {added:.0f} ms at p50 over the"
            " relay baseline"
        )
    if len(dashboard) < figures["tasks"]:
        console.print(f"[red]the browser showed {len(dashboard)} of {figures['tasks']} runs")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/dashboard.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=50.0, help="tasks published per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="for this long")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--screenshot", type=Path, help="save the page at the end here")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="agentledger-bench-dashboard-"))
    console.print(f"[bold]agentledger dashboard bench[/]: data in {root}")
    try:
        figures = asyncio.run(run(args, root))
    finally:
        _kill_children()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if report(args, figures) else 1


if __name__ == "__main__":
    sys.exit(main())
