#!/usr/bin/env python
"""Streaming through NATS (issue 12), against bare pydantic-ai `run_stream` in-process:

    python bench/streaming.py [--samples 200] [--streams 50] [--words 200]

One `agentledger worker` subprocess (SQLite store), an embedded nats-server, and the
`talker` agent (tests/support/streaming.py): a model that answers `--words` words at
once, streamed word by word (no model latency: what is measured is ours).

1. Time to first delta, p50 and p99 over `--samples` tasks one at a time: from the
   publish of a `stream: true` task to the first `text` chunk on a plain core-NATS
   subscription to `<prefix>.stream.<task_id>`; against `agent.run_stream()` in this
   process, from the call to the first text delta.
2. Deltas per second with `--streams` concurrent streams of `--words` words each, and
   the CPU per delta: the worker's CPU seconds (and nats-server's) over the deltas; the
   bare figure is this process's CPU over `--streams` concurrent `run_stream` calls.

Target (issue 12): time to first delta within 5 ms of bare at p50.
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

from agentledger.domain.subjects import stream_subject, task_subject  # noqa: E402
from bench.e2e import (  # noqa: E402
    Servers,
    _kill_children,
    bench_client,
    console,
    cpu_seconds,
    make_config,
    percentile,
    start_workers,
)
from support.streaming import PIECES_ENV, talker  # noqa: E402

CATALOG = """
[agents.talker]
ref = "support.streaming:talker"
"""


async def bare_ttfd(samples: int) -> list[float]:
    """ms from `run_stream` to its first text delta, in this process."""
    found = []
    for i in range(samples):
        t0 = time.perf_counter()
        first = None
        async with talker.run_stream(f"p{i}") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                if first is None:
                    first = time.perf_counter()
        assert first is not None
        found.append((first - t0) * 1000)
    return found


async def nats_ttfd(nc: Any, prefix: str, samples: int) -> list[float]:
    """ms from publishing a streamed task to its first text chunk (core subscription)."""
    js = nc.jetstream()
    found = []
    for i in range(samples):
        task_id = f"ttfd-{uuid.uuid4().hex[:12]}"
        sub = await nc.subscribe(stream_subject(prefix, task_id))
        body = {"task_id": task_id, "agent": "talker", "prompt": f"p{i}", "stream": True}
        t0 = time.perf_counter()
        await js.publish(
            task_subject(prefix, "talker"),
            json.dumps(body).encode(),
            headers={"Nats-Msg-Id": task_id},
        )
        first = None
        while True:
            chunk = json.loads((await sub.next_msg(timeout=30)).data)
            if first is None and chunk["kind"] == "text":
                first = time.perf_counter()
            if chunk["kind"] == "end":
                break
        await sub.unsubscribe()
        assert first is not None
        found.append((first - t0) * 1000)
    return found


async def bare_many(streams: int) -> tuple[int, float, float]:
    """(deltas, wall s, CPU s) of `streams` concurrent run_stream calls."""

    async def one(i: int) -> int:
        count = 0
        async with talker.run_stream(f"p{i}") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                count += 1
        return count

    cpu0, t0 = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(streams)))
    return sum(counts), time.perf_counter() - t0, time.process_time() - cpu0


async def nats_many(nc: Any, prefix: str, streams: int) -> tuple[int, float]:
    """(text chunks received, wall s) of `streams` streamed tasks published at once."""
    js = nc.jetstream()
    ids = [f"many-{uuid.uuid4().hex[:12]}" for _ in range(streams)]
    done = asyncio.Event()
    counts = dict.fromkeys(ids, 0)
    ended: set[str] = set()

    def handler(task_id: str) -> Any:
        async def on(msg: Any) -> None:
            chunk = json.loads(msg.data)
            if chunk["kind"] == "text":
                counts[task_id] += 1
            elif chunk["kind"] == "end":
                ended.add(task_id)
                if len(ended) == streams:
                    done.set()

        return on

    subs = [await nc.subscribe(stream_subject(prefix, t), cb=handler(t)) for t in ids]
    t0 = time.perf_counter()
    for i, task_id in enumerate(ids):
        body = {"task_id": task_id, "agent": "talker", "prompt": f"p{i}", "stream": True}
        await js.publish(
            task_subject(prefix, "talker"),
            json.dumps(body).encode(),
            headers={"Nats-Msg-Id": task_id},
        )
    await asyncio.wait_for(done.wait(), 300)
    wall = time.perf_counter() - t0
    for sub in subs:
        await sub.unsubscribe()
    return sum(counts.values()), wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="tasks for time to first delta")
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams")
    parser.add_argument("--words", type=int, default=200, help="words (deltas) per stream")
    args = parser.parse_args()
    os.environ[PIECES_ENV] = str(args.words)
    root = Path(tempfile.mkdtemp(prefix="agentledger-bench-stream-"))
    servers = Servers(root=root, sync_always=False)
    try:
        catalog = root / "catalog.toml"
        catalog.write_text(CATALOG)
        env = {"AGENTLEDGER_CATALOG": str(catalog), PIECES_ENV: str(args.words)}
        config = make_config(servers, "sqlite", "sqlite, 1 worker", root, env)
        config.env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
        prefix = config.settings.subject_prefix
        console.print("  bare run_stream: time to first delta ...", highlight=False)
        await bare_ttfd(20)  # warm up
        bare = await bare_ttfd(args.samples)
        bare_deltas, bare_wall, bare_cpu = await bare_many(args.streams)
        async with bench_client(config) as (nc, _):
            workers = await start_workers(config, nc, 1)
            try:
                console.print("  over NATS: time to first delta ...", highlight=False)
                await nats_ttfd(nc, prefix, 20)  # warm up
                over = await nats_ttfd(nc, prefix, args.samples)
                console.print(
                    f"  over NATS: {args.streams} concurrent streams ...", highlight=False
                )
                nats_pid = servers.nats_server.pid if servers.nats_server else None
                worker0 = sum(workers.cpu_s())
                server0 = cpu_seconds(nats_pid) or 0.0 if nats_pid else 0.0
                deltas, wall = await nats_many(nc, prefix, args.streams)
                worker_cpu = sum(workers.cpu_s()) - worker0
                server_cpu = (cpu_seconds(nats_pid) or 0.0) - server0 if nats_pid else 0.0
            finally:
                workers.stop()
        ttfd = Table(title=f"1. Time to first delta ({args.samples} tasks one at a time, ms)")
        for column in ("path", "p50", "p99", "mean"):
            ttfd.add_column(column, justify="left" if column == "path" else "right")
        for name, values in (
            ("bare `run_stream` in-process (baseline)", bare),
            ("publish -> first chunk over NATS (a worker)", over),
        ):
            ttfd.add_row(
                name,
                f"{percentile(values, 50):.2f}",
                f"{percentile(values, 99):.2f}",
                f"{statistics.mean(values):.2f}",
            )
        gap = percentile(over, 50) - percentile(bare, 50)
        ttfd.add_row(
            "difference at p50 (target <= 5 ms)",
            f"{gap:.2f}",
            "",
            "PASS" if gap <= 5 else "FAIL",
        )
        console.print(ttfd)
        many = Table(title=f"2. {args.streams} concurrent streams x {args.words} words")
        for column in ("path", "deltas", "wall s", "deltas/s", "CPU us per delta"):
            many.add_column(column, justify="left" if column == "path" else "right")
        many.add_row(
            "bare `run_stream` x N in-process (baseline)",
            str(bare_deltas),
            f"{bare_wall:.2f}",
            f"{bare_deltas / bare_wall:,.0f}",
            f"{bare_cpu / bare_deltas * 1e6:.1f}",
        )
        many.add_row(
            "over NATS: the worker's CPU",
            str(deltas),
            f"{wall:.2f}",
            f"{deltas / wall:,.0f}",
            f"{worker_cpu / max(deltas, 1) * 1e6:.1f}",
        )
        many.add_row(
            "over NATS: nats-server's CPU", "", "", "", f"{server_cpu / max(deltas, 1) * 1e6:.1f}"
        )
        console.print(many)
    finally:
        _kill_children()
        servers.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
