#!/usr/bin/env python
"""End-to-end benchmark of agentledger: real `agentledger worker` processes, an embedded
nats-server (JetStream, `sync_interval: always` unless told otherwise) and an embedded
PostgreSQL (fresh database per configuration) or a fresh SQLite file.

Sections (`--sections`, default all):

  throughput  calculator runs/s publish -> outcome, 1 and 2 worker processes, per backend,
              beside bare pydantic-ai `agent.run` (sequential and concurrent)
  lag         projection lag at a steady offered load (`agentledger project` subprocess)
  rss         worker peak RSS (VmHWM) with 200 slow runs in flight
  sleep       200 concurrent runs of a 1 s-per-response model: one worker vs bare agent.run

Run `python bench/e2e.py --help` for the options; BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# bench.* for the benchmark agents, tests/ for the embedded PostgreSQL launcher
# (support.postgres_server); agentledger itself comes from the installed package.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import nats  # noqa: E402
import psycopg  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.infra.nats import ensure_streams  # noqa: E402
from agentledger.infra.nats_server import EmbeddedNats  # noqa: E402
from agentledger.infra.settings import Settings  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
BENCH_CATALOG = BENCH_DIR / "catalog.toml"
CALCULATOR = "calculator"
SLEEPY = "sleepy_calculator"

console = Console(width=None if sys.stdout.isatty() else 140)

# -- targets ------------------------------------------------------------------------------

TARGET_RUNS_S = {"postgres": 80.0, "sqlite": 96.0}
TARGET_SLEEP_RATIO = 1.1
TARGET_LAG_P99_MS = 100.0
TARGET_RSS_MB = 300.0


# -- small helpers ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def prompt_for(i: int) -> str:
    return f"multiply {i} and 3" if i % 2 else f"add {i} and 17"


def verdict(ok: bool, how: str) -> str:
    return f"[green]PASS[/] ({how})" if ok else f"[red]MISS[/] ({how})"


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds used by each of our processes (and everything else) over a measurement.

    On a 2-core machine the worker competes with NATS, PostgreSQL, the projector and the
    bench client itself; this says who used the cores."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self._groups = groups
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self._busy0 = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {
            name: sum(cpu_seconds(pid) or 0.0 for pid in pids)
            for name, pids in self._groups().items()
        }
        own = os.times()
        sample["bench client"] = own.user + own.system
        return sample

    def start(self) -> None:
        self._start = self._sample()
        self._t0 = time.perf_counter()
        self._busy0 = machine_busy_s()[0]

    def stop(self) -> dict[str, float]:
        """Cores used per group (CPU seconds / wall seconds), plus 'other' and 'idle'."""
        end = self._sample()
        wall = time.perf_counter() - self._t0
        busy = machine_busy_s()[0] - self._busy0
        cores = {name: max(0.0, end[name] - self._start.get(name, 0.0)) / wall for name in end}
        cores["other processes"] = max(0.0, busy / wall - sum(cores.values()))
        cores["idle"] = max(0.0, (os.cpu_count() or 1) - busy / wall)
        return cores


def format_cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


def git_revision() -> str:
    """`<short commit>` of the tree measured, `+dirty` if it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# -- servers and settings -----------------------------------------------------------------


@dataclass(kw_only=True)
class Servers:
    """The embedded NATS (always) and PostgreSQL (when a section needs it)."""

    root: Path
    sync_always: bool
    nats_server: EmbeddedNats | None = None
    postgres: Any = None

    def start_nats(self) -> str:
        if self.nats_server is None:
            self.nats_server = EmbeddedNats(
                store_dir=self.root / "nats", sync_always=self.sync_always
            ).start()
        return self.nats_server.url

    def fresh_database(self, name: str) -> str:
        if self.postgres is None:
            from support.postgres_server import EmbeddedPostgres

            # Outside the bench tree's private parents: as root the server runs as the
            # `pgserver` user, which must be able to enter the data directory.
            pg_root = Path(tempfile.mkdtemp(prefix="agentledger-bench-pg-"))
            self._pg_root = pg_root
            self.postgres = EmbeddedPostgres(pg_root / "data").start()
        dsn: str = self.postgres.create_database(name)
        return dsn

    def cpu_groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        if self.nats_server is not None and self.nats_server.is_running:
            groups["nats-server"] = [self.nats_server.pid]
        if self.postgres is not None:
            postmaster = self.postgres._postmaster_pid()
            if postmaster is not None:
                groups["postgres"] = [postmaster, *children_of(postmaster)]
        return groups

    def stop(self) -> None:
        if self.nats_server is not None:
            with contextlib.suppress(Exception):
                self.nats_server.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
            shutil.rmtree(getattr(self, "_pg_root", ""), ignore_errors=True)


@dataclass(kw_only=True)
class Config:
    """One measured configuration: a backend, fresh storage and a fresh subject prefix."""

    backend: str
    settings: Settings
    env: dict[str, str]
    label: str


_config_ids = itertools.count(1)


def make_config(
    servers: Servers, backend: str, label: str, root: Path, worker_env: dict[str, str]
) -> Config:
    n = next(_config_ids)
    prefix = f"bench{n}{uuid.uuid4().hex[:6]}"
    data_dir = root / f"cfg{n}-{backend}"
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {
        "nats_url": servers.start_nats(),
        "subject_prefix": prefix,
        "data_dir": data_dir,
        "catalog": str(BENCH_CATALOG),
        "log_level": "WARNING",
    }
    if backend == "postgres":
        overrides["postgres_dsn"] = servers.fresh_database(f"bench_{prefix}")
    settings = Settings(**overrides)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"AGENTLEDGER_{name.upper()}"] = str(value)
    if settings.postgres_dsn is not None:
        env["AGENTLEDGER_POSTGRES_DSN"] = settings.postgres_dsn.get_secret_value()
    env.update(worker_env)
    env["PYTHONPATH"] = str(REPO_ROOT)
    # The bench reads the settings the subprocesses really get (with --worker-env applied).
    settings = Settings(
        **{
            **overrides,
            **{
                k.removeprefix("AGENTLEDGER_").lower(): v
                for k, v in worker_env.items()
                if k.startswith("AGENTLEDGER_")
            },
        }
    )
    return Config(backend=backend, settings=settings, env=env, label=label)


# -- subprocesses -------------------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for child in _children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()


atexit.register(_kill_children)


def spawn(command: str, config: Config, log_path: Path) -> subprocess.Popen[bytes]:
    """`agentledger <command>` as a subprocess with the configuration's environment."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", command],
            env=config.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(config.settings.data_dir),
        )
    _children.append(process)
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(kw_only=True)
class Workers:
    processes: list[subprocess.Popen[bytes]]
    log_path: Path

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def check_alive(self) -> None:
        for p in self.processes:
            if p.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {p.pid} exited with {p.returncode}:\n{tail}")

    def peak_rss_mb(self) -> list[float]:
        return [(proc_status_kb(pid, "VmHWM") or 0) / 1024 for pid in self.pids]

    def rss_mb(self) -> list[float]:
        return [(proc_status_kb(pid, "VmRSS") or 0) / 1024 for pid in self.pids]

    def cpu_s(self) -> list[float]:
        return [cpu_seconds(pid) or 0.0 for pid in self.pids]

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in self.processes:
            stop_process(p)


async def start_workers(config: Config, nc: Client, count: int) -> Workers:
    """`count` worker subprocesses, returned once each has a pull request waiting on the
    tasks consumer (the worker logs at WARNING, so there is no 'started' line to watch).

    The first starts alone: two workers creating the schema of a fresh PostgreSQL
    database at once can fail with `duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"` (concurrent CREATE TABLE IF NOT EXISTS)."""
    log_path = Path(config.settings.data_dir) / "workers.log"
    workers = Workers(processes=[spawn("worker", config, log_path)], log_path=log_path)
    await _wait_pulling(workers, config, nc, 1)
    if count > 1:
        workers.processes += [spawn("worker", config, log_path) for _ in range(count - 1)]
        await _wait_pulling(workers, config, nc, count)
    return workers


async def _wait_pulling(workers: Workers, config: Config, nc: Client, count: int) -> None:
    js = nc.jetstream()
    durable = f"{config.settings.subject_prefix}-workers"
    deadline = time.monotonic() + 60
    while True:
        workers.check_alive()
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(config.settings.tasks_stream, durable)
            if (info.num_waiting or 0) >= count:
                return
        if time.monotonic() > deadline:
            console.print(f"[yellow]{count} workers not seen pulling after 60 s; going on[/]")
            return
        await asyncio.sleep(0.05)


# -- load generation ----------------------------------------------------------------------


@dataclass(kw_only=True)
class Outcome:
    received: float
    """perf_counter when the outcome arrived."""
    received_wall: float
    """time.time() when the outcome arrived."""
    completed: bool


class OutcomeCollector:
    """Every outcome on `<prefix>.results.>`, by task id (subscribed before publishing)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self.changed = asyncio.Event()

    async def subscribe(self, nc: Client, prefix: str) -> None:
        await nc.subscribe(f"{prefix}.results.>", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        now = time.perf_counter()
        task_id = msg.subject.rsplit(".", 1)[1]
        outcome = Outcome(
            received=now,
            received_wall=time.time(),
            completed=b'"status":"completed"' in msg.data,
        )
        self.outcomes.setdefault(task_id, outcome)
        waiter = self._waiting.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
        self.changed.set()

    def wait_for(self, task_id: str) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if task_id in self.outcomes:
            future.set_result(self.outcomes[task_id])
        else:
            self._waiting[task_id] = future
        return future


@dataclass(kw_only=True)
class Batch:
    tasks: int
    wall_s: float
    runs_per_s: float
    latencies_ms: list[float]
    failed: int
    publish_s: float

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def task_payload(task_id: str, agent: str, i: int) -> bytes:
    return json.dumps({"task_id": task_id, "agent": agent, "prompt": prompt_for(i)}).encode()


async def publish_batch(
    nc: Client,
    collector: OutcomeCollector,
    prefix: str,
    agent: str,
    count: int,
    in_flight: int,
    tag: str,
    rate: float | None = None,
    timeout_s: float = 120.0,
    on_publish: Callable[[str], None] | None = None,
) -> tuple[Batch, dict[str, float]]:
    """Publish `count` tasks (at most `in_flight` publishes awaiting their JetStream ack;
    with `rate`, paced at that many per second) and wait for every outcome.

    Returns the batch figures and each task's publish time (perf_counter)."""
    js = nc.jetstream()
    subject = f"{prefix}.tasks.run.{agent}"
    ids = [f"{tag}-{i}" for i in range(count)]
    published: dict[str, float] = {}
    sem = asyncio.Semaphore(in_flight)
    start = time.perf_counter()

    async def one(i: int, task_id: str) -> None:
        try:
            published[task_id] = time.perf_counter()
            if on_publish is not None:
                on_publish(task_id)
            await js.publish(
                subject, task_payload(task_id, agent, i), headers={"Nats-Msg-Id": task_id}
            )
        finally:
            sem.release()

    pending: set[asyncio.Task[None]] = set()
    for i, task_id in enumerate(ids):
        if rate is not None:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await sem.acquire()
        t = asyncio.create_task(one(i, task_id))
        pending.add(t)
        t.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    publish_done = time.perf_counter()

    waiters = [collector.wait_for(task_id) for task_id in ids]
    try:
        await asyncio.wait_for(asyncio.gather(*waiters), timeout_s)
    except TimeoutError:
        missing = sum(1 for t in ids if t not in collector.outcomes)
        raise RuntimeError(
            f"{missing} of {count} outcomes missing after {timeout_s:.0f} s"
        ) from None
    outcomes = [collector.outcomes[t] for t in ids]
    end = max(o.received for o in outcomes)
    wall = end - start
    latencies = [(collector.outcomes[t].received - published[t]) * 1000 for t in ids]
    batch = Batch(
        tasks=count,
        wall_s=wall,
        runs_per_s=count / wall,
        latencies_ms=latencies,
        failed=sum(1 for o in outcomes if not o.completed),
        publish_s=publish_done - start,
    )
    return batch, published


async def sequential_latency(
    nc: Client, collector: OutcomeCollector, prefix: str, count: int, tag: str
) -> list[float]:
    """Latency with one task in flight at a time (no queueing)."""
    js = nc.jetstream()
    latencies = []
    for i in range(count):
        task_id = f"{tag}-{i}"
        waiter = collector.wait_for(task_id)
        t0 = time.perf_counter()
        await js.publish(
            f"{prefix}.tasks.run.{CALCULATOR}",
            task_payload(task_id, CALCULATOR, i),
            headers={"Nats-Msg-Id": task_id},
        )
        outcome = await asyncio.wait_for(waiter, 30)
        latencies.append((outcome.received - t0) * 1000)
    return latencies


@contextlib.asynccontextmanager
async def bench_client(config: Config) -> Any:
    nc = await nats.connect(config.settings.nats_url, name="agentledger-bench")
    try:
        await ensure_streams(nc.jetstream(), config.settings)
        collector = OutcomeCollector()
        await collector.subscribe(nc, config.settings.subject_prefix)
        yield nc, collector
    finally:
        await nc.drain()


# -- profiling ----------------------------------------------------------------------------


class Profiler:
    """py-spy attached to worker processes for one measurement (collapsed stacks)."""

    def __init__(self, out_dir: Path | None, rate: int, gil: bool) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self.gil = gil
        self._procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def start(self, pids: dict[str, list[int]], name: str) -> None:
        """Attach to each pid; `pids` maps a role (worker, projector) to its processes."""
        if self.out_dir is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for role, pid in ((r, p) for r, ps in pids.items() for p in ps):
            out = self.out_dir / f"{name}-{role}-pid{pid}.txt"
            self.files.append(out)
            self._procs.append(
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(self.rate),
                        "--format",
                        "raw",
                        "--threads",
                        "-o",
                        str(out),
                        *(["--gil"] if self.gil else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.5)  # let py-spy attach before the measurement starts

    def stop(self) -> None:
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs = []


# -- results ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    bare: dict[str, Any] = field(default_factory=dict)
    throughput: list[dict[str, Any]] = field(default_factory=list)
    lag: list[dict[str, Any]] = field(default_factory=list)
    sleepy: list[dict[str, Any]] = field(default_factory=list)


# -- section: bare baseline ---------------------------------------------------------------


async def bare_baseline(args: argparse.Namespace, results: Results) -> None:
    from agentledger.catalog.example_agents import calculator

    async def timed(concurrency: int, count: int) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                result = await calculator.run(prompt_for(i))
                latencies.append((time.perf_counter() - t0) * 1000)
                assert result.output.startswith("The result is")

        start = time.perf_counter()
        cpu0 = sum(os.times()[:2])
        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - start
        cpu = sum(os.times()[:2]) - cpu0
        return {
            "cpu_ms_per_run": cpu / count * 1000,
            "concurrency": concurrency,
            "tasks": count,
            "runs_per_s": count / wall,
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
        }

    await timed(args.bare_concurrency, args.warmup)
    results.bare["sequential"] = await timed(1, args.tasks)
    results.bare["concurrent"] = await timed(args.bare_concurrency, args.tasks)
    # The same, with the garbage-collector settings `agentledger worker` applies once
    # started (AGENTLEDGER_GC_THRESHOLD): what bare pydantic-ai would gain from them too.
    import gc

    from agentledger.handlers.cli_support import tune_gc
    from agentledger.infra.settings import Settings

    before = gc.get_threshold()
    tune_gc(Settings().gc_threshold)
    try:
        results.bare["concurrent_gc"] = await timed(args.bare_concurrency, args.tasks)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- section: throughput ------------------------------------------------------------------


async def throughput_one(
    args: argparse.Namespace, config: Config, workers_n: int, profiler: Profiler, servers: Servers
) -> dict[str, Any]:
    async with bench_client(config) as (nc, collector):
        prefix = config.settings.subject_prefix
        workers = await start_workers(config, nc, workers_n)
        try:
            await publish_batch(
                nc, collector, prefix, CALCULATOR, args.warmup, args.in_flight, "warm"
            )
            rss_idle = workers.rss_mb()
            profiler.start({"worker": workers.pids}, f"{config.backend}-{workers_n}w")
            meter = CpuMeter(lambda: {"workers": workers.pids, **servers.cpu_groups()})
            lsn0 = wal_lsn(config)
            meter.start()
            cpu0 = workers.cpu_s()
            try:
                batch, _ = await publish_batch(
                    nc,
                    collector,
                    prefix,
                    CALCULATOR,
                    args.tasks,
                    args.in_flight,
                    "load",
                    timeout_s=max(120.0, args.tasks / 5),
                )
            finally:
                cpu1 = workers.cpu_s()
                cores = meter.stop()
                lsn1 = wal_lsn(config)
                profiler.stop()
            peak = workers.peak_rss_mb()
            single = await sequential_latency(nc, collector, prefix, args.latency_tasks, "seq")
            workers.check_alive()
        finally:
            workers.stop()
    cpu_per_run_ms = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / batch.tasks * 1000
    return {
        "backend": config.backend,
        "workers": workers_n,
        "tasks": batch.tasks,
        "failed": batch.failed,
        "runs_per_s": batch.runs_per_s,
        "wall_s": batch.wall_s,
        "p50_ms": batch.p(50),
        "p95_ms": batch.p(95),
        "p99_ms": batch.p(99),
        "single_p50_ms": percentile(single, 50),
        "single_p95_ms": percentile(single, 95),
        "worker_cpu_ms_per_run": cpu_per_run_ms,
        "worker_rss_idle_mb": max(rss_idle),
        "worker_peak_rss_mb": max(peak),
        "publish_s": batch.publish_s,
        "cores": cores,
        "wal_kb_per_run": (lsn1 - lsn0) / 1024 / batch.tasks if lsn0 and lsn1 else None,
    }


def wal_lsn(config: Config) -> int | None:
    """PostgreSQL's current WAL position in bytes (None on SQLite)."""
    if config.settings.postgres_dsn is None:
        return None
    with psycopg.connect(config.settings.postgres_dsn.get_secret_value(), autocommit=True) as c:
        row = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    return int(row[0]) if row else None


async def throughput(
    args: argparse.Namespace, servers: Servers, root: Path, results: Results, profiler: Profiler
) -> None:
    for backend in args.backends:
        for workers_n in args.workers:
            console.print(f"  throughput: {backend}, {workers_n} worker(s) ...")
            config = make_config(servers, backend, f"{backend}-{workers_n}w", root, args.worker_env)
            row = await throughput_one(args, config, workers_n, profiler, servers)
            results.throughput.append(row)
            console.print(
                f"    {row['runs_per_s']:.1f} runs/s, p50 {row['p50_ms']:.0f} ms,"
                f" worker CPU {row['worker_cpu_ms_per_run']:.1f} ms/run"
                + (f", WAL {row['wal_kb_per_run']:.1f} KB/run" if row["wal_kb_per_run"] else "")
            )
            console.print(f"    [dim]cores used: {format_cores(row['cores'])}[/]")


# -- section: projection lag --------------------------------------------------------------


class ViewPoller:
    """Two observers in one polling thread.

    Runs view: for the tasks it is told about, the wall time their `al_runs` row is first
    seen completed, and its `finished_at` (the RunCompleted event's timestamp).

    Notification log vs tracking: each poll reads the event store's last notification id
    (what is committed) and the lowest tracking position of the projections (what every
    view has applied), so each notification gets a first-seen-committed and a
    first-seen-applied time."""

    def __init__(self, config: Config, every_s: float) -> None:
        self.config = config
        self.every_s = every_s
        self.pending: set[str] = set()
        self.seen: dict[str, tuple[float, float]] = {}
        self.polls = 0
        self.max_pending = 0
        self.committed_at: dict[int, float] = {}
        self.applied_at: dict[int, float] = {}
        self._head = -1
        self._applied = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-poller", daemon=True)

    def watch_one(self, task_id: str) -> None:
        with self._lock:
            self.pending.add(task_id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _connect(self) -> Any:
        settings = self.config.settings
        if settings.postgres_dsn is not None:
            return psycopg.connect(settings.postgres_dsn.get_secret_value(), autocommit=True)
        return sqlite3.connect(settings.views_sqlite_file, isolation_level=None, timeout=30)

    def notification_lags_ms(self, first: int, last: int) -> list[float]:
        """Commit -> applied-by-every-projection, per notification id in [first, last]."""
        return [
            (self.applied_at[i] - self.committed_at[i]) * 1000
            for i in range(first, last + 1)
            if i in self.applied_at and i in self.committed_at
        ]

    @property
    def head(self) -> int:
        return self._head

    @property
    def applied(self) -> int:
        return self._applied

    def _track(self, store: Any, connection: Any) -> None:
        head = store.max_notification_id()
        now = time.time()
        try:
            row = connection.execute("SELECT min(notification_id) FROM al_tracking").fetchone()
        except (psycopg.errors.UndefinedTable, sqlite3.OperationalError):
            row = None
        applied = int(row[0]) if row and row[0] is not None else 0
        if self._head < 0:  # the first poll only sets the starting points
            self._head, self._applied = head, applied
            return
        for i in range(self._head + 1, head + 1):
            self.committed_at[i] = now
        for i in range(self._applied + 1, applied + 1):
            self.applied_at[i] = now
        self._head = max(self._head, head)
        self._applied = max(self._applied, applied)

    def _run(self) -> None:
        from agentledger.infra.event_store import EventStore

        connection = self._connect()
        store = EventStore(self.config.settings)
        is_pg = self.config.settings.postgres_dsn is not None
        try:
            while not self._stop.is_set():
                self._track(store, connection)
                with self._lock:
                    wanted = list(self.pending)
                self.max_pending = max(self.max_pending, len(wanted))
                if wanted:
                    rows = self._query(connection, is_pg, wanted)
                    now = time.time()
                    self.polls += 1
                    with self._lock:
                        for task_id, finished_at in rows:
                            if task_id in self.pending:
                                self.pending.discard(task_id)
                                finished = datetime.fromisoformat(finished_at).timestamp()
                                self.seen[task_id] = (now, finished)
                self._stop.wait(self.every_s)
        finally:
            connection.close()
            store.close()

    @staticmethod
    def _query(connection: Any, is_pg: bool, wanted: list[str]) -> list[tuple[str, str]]:
        try:
            if is_pg:
                return connection.execute(
                    "SELECT task_id, finished_at FROM al_runs"
                    " WHERE status = 'completed' AND task_id = ANY(%s)",
                    (wanted,),
                ).fetchall()
            marks = ",".join("?" * len(wanted))
            return connection.execute(
                "SELECT task_id, finished_at FROM al_runs"
                f" WHERE status = 'completed' AND task_id IN ({marks})",
                wanted,
            ).fetchall()
        except (psycopg.errors.UndefinedTable, sqlite3.OperationalError):
            return []  # the projector has not created the view yet


async def lag_one(
    args: argparse.Namespace, config: Config, servers: Servers, profiler: Profiler
) -> dict[str, Any]:
    async with bench_client(config) as (nc, collector):
        prefix = config.settings.subject_prefix
        workers = await start_workers(config, nc, args.lag_workers)
        projector = spawn("project", config, Path(config.settings.data_dir) / "projector.log")
        poller = ViewPoller(config, args.lag_poll_ms / 1000)
        poller.start()
        try:
            # Tasks are watched from their publish on, so each poll asks only about the
            # few runs in progress (not about every task of the batch).
            watch = poller.watch_one
            warm_ids = [f"lagwarm-{i}" for i in range(args.lag_rate)]
            await publish_batch(
                nc,
                collector,
                prefix,
                CALCULATOR,
                len(warm_ids),
                256,
                "lagwarm",
                rate=args.lag_rate,
                on_publish=watch,
            )
            await _wait_seen(poller, warm_ids, 60, projector)
            count = int(args.lag_rate * args.lag_seconds)
            ids = [f"lag-{i}" for i in range(count)]
            meter = CpuMeter(
                lambda: {
                    "workers": workers.pids,
                    "projector": [projector.pid],
                    **servers.cpu_groups(),
                }
            )
            profiler.start(
                {"worker": workers.pids, "projector": [projector.pid]}, f"lag-{config.backend}"
            )
            meter.start()
            first_notification = poller.head + 1
            cpu_p0 = cpu_seconds(projector.pid) or 0.0
            cpu_w0 = workers.cpu_s()
            batch, _ = await publish_batch(
                nc,
                collector,
                prefix,
                CALCULATOR,
                count,
                256,
                "lag",
                rate=args.lag_rate,
                on_publish=watch,
            )
            cpu_p1 = cpu_seconds(projector.pid) or 0.0
            cpu_w1 = workers.cpu_s()
            cores = meter.stop()
            await _wait_seen(poller, ids, 60, projector)
            last_notification = poller.head
            deadline = time.monotonic() + 30
            while poller.applied < last_notification and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            profiler.stop()
            workers.check_alive()
        finally:
            profiler.stop()
            poller.stop()
            stop_process(projector)
            workers.stop()
    from_outcome = [(poller.seen[t][0] - collector.outcomes[t].received_wall) * 1000 for t in ids]
    from_event = [(poller.seen[t][0] - poller.seen[t][1]) * 1000 for t in ids]
    quarter = max(1, count // 4)
    notification_lag = poller.notification_lags_ms(first_notification, last_notification)
    return {
        "notifications": len(notification_lag),
        "notification_p50_ms": percentile(notification_lag, 50),
        "notification_p99_ms": percentile(notification_lag, 99),
        "notification_max_ms": max(notification_lag, default=float("nan")),
        "from_event_p50_first_quarter_ms": percentile(from_event[:quarter], 50),
        "from_event_p50_last_quarter_ms": percentile(from_event[-quarter:], 50),
        "backend": config.backend,
        "workers": args.lag_workers,
        "offered_per_s": args.lag_rate,
        "achieved_per_s": batch.runs_per_s,
        "tasks": count,
        "poll_ms": args.lag_poll_ms,
        "polls": poller.polls,
        "max_watched": poller.max_pending,
        "e2e_p50_ms": batch.p(50),
        "e2e_p99_ms": batch.p(99),
        "from_outcome_p50_ms": percentile(from_outcome, 50),
        "from_outcome_p99_ms": percentile(from_outcome, 99),
        "from_outcome_min_ms": min(from_outcome),
        "from_event_p50_ms": percentile(from_event, 50),
        "from_event_p99_ms": percentile(from_event, 99),
        "from_event_max_ms": max(from_event),
        "projector_cpu_ms_per_run": (cpu_p1 - cpu_p0) / count * 1000,
        "worker_cpu_ms_per_run": sum(b - a for a, b in zip(cpu_w0, cpu_w1, strict=True))
        / count
        * 1000,
        "cores": cores,
    }


async def _wait_seen(
    poller: ViewPoller, ids: list[str], timeout: float, projector: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while any(t not in poller.seen for t in ids):
        if projector.poll() is not None:
            raise RuntimeError(f"the projector exited with {projector.returncode}")
        if time.monotonic() > deadline:
            missing = sum(1 for t in ids if t not in poller.seen)
            raise RuntimeError(f"{missing} runs never showed up in the runs view")
        await asyncio.sleep(0.05)


async def lag(
    args: argparse.Namespace, servers: Servers, root: Path, results: Results, profiler: Profiler
) -> None:
    for backend in args.lag_backends:
        console.print(f"  projection lag: {backend}, {args.lag_rate} runs/s offered ...")
        config = make_config(servers, backend, f"lag-{backend}", root, args.worker_env)
        row = await lag_one(args, config, servers, profiler)
        results.lag.append(row)
        console.print(
            f"    commit -> applied p50 / p99 {row['notification_p50_ms']:.1f} /"
            f" {row['notification_p99_ms']:.1f} ms; runs row after RunCompleted p99"
            f" {row['from_event_p99_ms']:.1f} ms (p50 first / last quarter of the load"
            f" {row['from_event_p50_first_quarter_ms']:.1f} /"
            f" {row['from_event_p50_last_quarter_ms']:.1f} ms), after the outcome p99"
            f" {row['from_outcome_p99_ms']:.1f} ms; {row['achieved_per_s']:.1f} runs/s achieved"
        )
        console.print(f"    [dim]cores used: {format_cores(row['cores'])}[/]")


# -- sections: 200 x 1 s and worker RSS ---------------------------------------------------


async def bare_sleepy(count: int) -> tuple[float, float]:
    """Wall and CPU seconds of `count` concurrent bare `agent.run` calls."""
    from bench.agents import sleepy_calculator

    await sleepy_calculator.run(prompt_for(0))  # warm-up: first-run imports and caches
    start = time.perf_counter()
    cpu0 = sum(os.times()[:2])
    results = await asyncio.gather(*(sleepy_calculator.run(prompt_for(i)) for i in range(count)))
    wall = time.perf_counter() - start
    cpu = sum(os.times()[:2]) - cpu0
    assert all(r.output.startswith("The result is") for r in results)
    return wall, cpu


async def sleepy_one(args: argparse.Namespace, config: Config, servers: Servers) -> dict[str, Any]:
    async with bench_client(config) as (nc, collector):
        prefix = config.settings.subject_prefix
        workers = await start_workers(config, nc, 1)
        try:
            # Warm-up: imports, connections and pools, with a few slow runs.
            await publish_batch(nc, collector, prefix, SLEEPY, 20, 256, "sleepwarm")
            rss_before = workers.rss_mb()[0]
            in_flight_max = 0
            rss_max = 0.0
            stop = asyncio.Event()

            async def sample() -> None:
                nonlocal in_flight_max, rss_max
                js = nc.jetstream()
                durable = f"{prefix}-workers"
                while not stop.is_set():
                    with contextlib.suppress(Exception):
                        info = await js.consumer_info(config.settings.tasks_stream, durable)
                        in_flight_max = max(in_flight_max, info.num_ack_pending or 0)
                    rss_max = max(rss_max, workers.rss_mb()[0])
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            meter = CpuMeter(lambda: {"worker": workers.pids, **servers.cpu_groups()})
            meter.start()
            cpu0 = workers.cpu_s()[0]
            batch, _ = await publish_batch(
                nc, collector, prefix, SLEEPY, args.sleep_tasks, 256, "sleep", timeout_s=120
            )
            cpu1 = workers.cpu_s()[0]
            cores = meter.stop()
            stop.set()
            await sampler
            peak = workers.peak_rss_mb()[0]
            workers.check_alive()
        finally:
            workers.stop()
    return {
        "backend": config.backend,
        "tasks": batch.tasks,
        "failed": batch.failed,
        "wall_s": batch.wall_s,
        "p50_ms": batch.p(50),
        "max_ms": max(batch.latencies_ms),
        "in_flight_max": in_flight_max,
        "rss_before_mb": rss_before,
        "rss_max_sampled_mb": rss_max,
        "peak_rss_mb": peak,
        "worker_cpu_s": cpu1 - cpu0,
        "cores": cores,
    }


async def sleepy(args: argparse.Namespace, servers: Servers, root: Path, results: Results) -> None:
    console.print(f"  200 x 1 s: bare agent.run x {args.sleep_tasks} ...")
    bare_wall, bare_cpu = await bare_sleepy(args.sleep_tasks)
    for backend in args.sleep_backends:
        console.print(f"  200 x 1 s: one worker on {backend} ...")
        config = make_config(servers, backend, f"sleep-{backend}", root, args.worker_env)
        row = await sleepy_one(args, config, servers)
        row["bare_wall_s"] = bare_wall
        row["bare_cpu_s"] = bare_cpu
        row["ratio"] = row["wall_s"] / bare_wall
        results.sleepy.append(row)
        console.print(
            f"    {row['wall_s']:.2f} s vs bare {bare_wall:.2f} s,"
            f" peak RSS {row['peak_rss_mb']:.0f} MB, worker CPU {row['worker_cpu_s']:.2f} s"
        )
        console.print(f"    [dim]cores used: {format_cores(row['cores'])}[/]")


# -- report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: Results) -> list[tuple[str, bool, str]]:
    """Print the tables; return (target, passed, detail) for the summary."""
    checks: list[tuple[str, bool, str]] = []
    meta = results.meta
    console.rule("[bold]agentledger end-to-end benchmark")
    console.print(
        f"{meta['date']}  ·  commit {meta['revision']}  ·  {meta['cpus']} CPUs  ·"
        f"  Python {meta['python']}  ·"
        f" nats-server sync_interval: {'always' if args.sync_always else 'default (not fsync per message)'}"
        f"  ·  worker env: {meta['worker_env'] or 'defaults'}"
    )
    console.print(
        "[dim]2-core machine shared with the bench client, NATS and PostgreSQL; other "
        "processes (tests) may add noise.[/]"
    )

    bare = results.bare
    if results.throughput or bare:
        table = Table(title="1. Throughput end to end: calculator (model -> tool -> model)")
        for col in (
            "configuration",
            "runs/s",
            "vs bare 16-conc",
            "p50 / p95 ms @ in-flight",
            "p50 / p95 ms @ 1 in flight",
            "CPU ms/run",
            "worker RSS MB",
            "target",
            "result",
        ):
            table.add_column(col, justify="left" if col in ("configuration", "result") else "right")
        ref = bare.get("concurrent", {}).get("runs_per_s")
        bare_cpu = bare.get("concurrent", {}).get("cpu_ms_per_run")
        for key, label in (
            ("sequential", "bare agent.run, sequential"),
            ("concurrent", f"bare agent.run, {args.bare_concurrency} concurrent"),
            ("concurrent_gc", f"bare agent.run, {args.bare_concurrency} concurrent, worker's GC"),
        ):
            if key in bare:
                b = bare[key]
                table.add_row(
                    label,
                    f"{b['runs_per_s']:.1f}",
                    "1.00x"
                    if key == "concurrent"
                    else f"{b['runs_per_s'] / ref:.2f}x"
                    if ref
                    else "",
                    f"{b['p50_ms']:.1f} / {b['p95_ms']:.1f}",
                    "",
                    f"{b['cpu_ms_per_run']:.1f}",
                    "",
                    "",
                    "",
                )
        best: dict[str, float] = {}
        for row in results.throughput:
            target = TARGET_RUNS_S[row["backend"]]
            ok = row["runs_per_s"] >= target
            best[row["backend"]] = max(best.get(row["backend"], 0.0), row["runs_per_s"])
            diff = (row["runs_per_s"] / target - 1) * 100
            table.add_row(
                f"{row['backend']}, {row['workers']} worker{'s' if row['workers'] > 1 else ''}"
                + (f" [red]({row['failed']} failed)[/]" if row["failed"] else ""),
                f"{row['runs_per_s']:.1f}",
                f"{row['runs_per_s'] / ref:.2f}x" if ref else "",
                f"{row['p50_ms']:.0f} / {row['p95_ms']:.0f}",
                f"{row['single_p50_ms']:.1f} / {row['single_p95_ms']:.1f}",
                f"{row['worker_cpu_ms_per_run']:.1f}"
                + (f" ({row['worker_cpu_ms_per_run'] / bare_cpu:.1f}x)" if bare_cpu else ""),
                f"{row['worker_peak_rss_mb']:.0f}",
                f">= {target:.0f}",
                "[green]PASS[/]" if ok else f"[red]MISS[/] {diff:+.0f}%",
            )
        console.print(table)
        console.print(
            f"[dim]{args.tasks} tasks per row after {args.warmup} warm-up tasks; publishes "
            f"pipelined ({args.in_flight} awaiting their JetStream ack), outcomes collected on "
            "<prefix>.results.>; runs/s = tasks / (first publish -> last outcome). Latency "
            "'@ in-flight' is mostly queueing (Little's law); '@ 1 in flight' is "
            f"{args.latency_tasks} tasks one at a time. Worker CPU = utime+stime of the worker "
            "processes during the measured batch / tasks (bare: the bench process); in "
            "brackets, relative to bare agent.run, which stays steady when the shared "
            "machine's speed drifts. "
            "RSS = VmHWM of the biggest worker.[/]"
        )
        for row in results.throughput:
            wal = f"; WAL {row['wal_kb_per_run']:.1f} KB/run" if row["wal_kb_per_run"] else ""
            console.print(
                f"[dim]cores used, {row['backend']} {row['workers']}w: "
                f"{format_cores(row['cores'])}{wal}[/]"
            )
        for backend, value in best.items():
            target = TARGET_RUNS_S[backend]
            checks.append(
                (
                    f"e2e throughput on {backend} >= {target:.0f} runs/s (best worker count)",
                    value >= target,
                    f"{value:.1f} runs/s, {(value / target - 1) * 100:+.0f}%",
                )
            )

    if results.lag:
        table = Table(title=f"2. Projection lag at {args.lag_rate} runs/s offered")
        for col in (
            "backend",
            "workers",
            "achieved runs/s",
            "commit -> applied by all views p50 / p99 / max ms",
            "RunCompleted -> runs row p50 / p99 ms",
            "outcome -> runs row p50 / p99 ms",
            "projector CPU ms/run",
            "target",
            "result",
        ):
            table.add_column(col, justify="left" if col in ("backend", "result") else "right")
        for row in results.lag:
            p99 = row["notification_p99_ms"]
            ok = p99 < TARGET_LAG_P99_MS
            overloaded = row["achieved_per_s"] < 0.95 * row["offered_per_s"]
            table.add_row(
                row["backend"],
                str(row["workers"]),
                f"{row['achieved_per_s']:.1f}" + (" [red](behind)[/]" if overloaded else ""),
                f"{row['notification_p50_ms']:.1f} / {p99:.1f} / {row['notification_max_ms']:.1f}",
                f"{row['from_event_p50_ms']:.1f} / {row['from_event_p99_ms']:.1f}",
                f"{row['from_outcome_p50_ms']:.1f} / {row['from_outcome_p99_ms']:.1f}",
                f"{row['projector_cpu_ms_per_run']:.1f}",
                f"p99 < {TARGET_LAG_P99_MS:.0f}",
                "[green]PASS[/]"
                if ok
                else f"[red]MISS[/] {(p99 / TARGET_LAG_P99_MS - 1) * 100:+.0f}%",
            )
            checks.append(
                (
                    f"projection lag p99 < {TARGET_LAG_P99_MS:.0f} ms at {args.lag_rate} runs/s"
                    f" on {row['backend']}",
                    ok,
                    f"p99 {p99:.1f} ms ({(p99 / TARGET_LAG_P99_MS - 1) * 100:+.0f}%)",
                )
            )
        console.print(table)
        console.print(
            "[dim]Method: `agentledger project` (all projections, the event relay and the query "
            "responder, as deployed) runs as a subprocess while the bench publishes calculator "
            f"tasks at a steady {args.lag_rate}/s for {args.lag_seconds:g} s. A thread in the "
            f"bench polls every {args.lag_poll_ms:g} ms: (a) the event store's last "
            "notification id and the lowest tracking position in al_tracking: commit -> "
            "applied = first poll that sees a notification applied by every projection - "
            "first poll that sees it committed (this is the figure judged); (b) al_runs for "
            "the runs in progress: RunCompleted -> runs row = first poll that sees the row "
            "completed - the RunCompleted event's timestamp (finished_at; stamped in the "
            "worker before its save commits, so a busy worker's write-path queueing counts "
            "here too); outcome -> runs row = the same sighting - outcome received by the "
            "bench (negative: the view was ahead of the outcome). Each figure carries up to "
            "one poll interval of sampling error. '(behind)': the system did not keep up "
            "with the offered rate.[/]"
        )
        for row in results.lag:
            console.print(
                f"[dim]cores used, {row['backend']}: {format_cores(row['cores'])}; worker CPU "
                f"{row['worker_cpu_ms_per_run']:.1f} ms/run; {row['notifications']} "
                "notifications measured[/]"
            )

    if results.sleepy:
        table = Table(
            title=f"3 + 4. {args.sleep_tasks} concurrent runs of a 1 s-per-response model "
            "(model -> tool -> model: 2 s of model time per run), ONE worker process"
        )
        for col in (
            "backend",
            "worker wall s",
            "bare agent.run wall s",
            "ratio",
            "max in flight",
            "worker / bare CPU s",
            "worker RSS before MB",
            "peak RSS (VmHWM) MB",
            "ratio target",
            "RSS target",
        ):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for row in results.sleepy:
            ok_ratio = row["ratio"] <= TARGET_SLEEP_RATIO
            ok_rss = row["peak_rss_mb"] < TARGET_RSS_MB
            table.add_row(
                row["backend"] + (f" [red]({row['failed']} failed)[/]" if row["failed"] else ""),
                f"{row['wall_s']:.2f}",
                f"{row['bare_wall_s']:.2f}",
                f"{row['ratio']:.2f}x",
                str(row["in_flight_max"]),
                f"{row['worker_cpu_s']:.2f} / {row['bare_cpu_s']:.2f}",
                f"{row['rss_before_mb']:.0f}",
                f"{row['peak_rss_mb']:.0f}",
                verdict(ok_ratio, f"<= {TARGET_SLEEP_RATIO}x"),
                verdict(ok_rss, f"< {TARGET_RSS_MB:.0f} MB"),
            )
            checks.append(
                (
                    f"{args.sleep_tasks} x 1 s within {TARGET_SLEEP_RATIO}x of bare on {row['backend']}",
                    ok_ratio,
                    f"{row['ratio']:.2f}x ({row['wall_s']:.2f} s vs {row['bare_wall_s']:.2f} s)",
                )
            )
            checks.append(
                (
                    f"worker peak RSS < {TARGET_RSS_MB:.0f} MB with {row['in_flight_max']} in flight"
                    f" on {row['backend']}",
                    ok_rss,
                    f"{row['peak_rss_mb']:.0f} MB "
                    f"({(row['peak_rss_mb'] / TARGET_RSS_MB - 1) * 100:+.0f}%)",
                )
            )
        console.print(table)
        console.print(
            "[dim]All tasks published at once (pipelined); wall = first publish -> last "
            "outcome. 'max in flight' = the most un-acked task messages seen on the "
            "consumer (sampled every 100 ms). Peak RSS = the worker's VmHWM after the batch "
            "(its lifetime peak, warm-up included). Bare = the same agent, "
            f"{args.sleep_tasks} concurrent `agent.run` calls in the bench process.[/]"
        )
        for row in results.sleepy:
            console.print(f"[dim]cores used, {row['backend']}: {format_cores(row['cores'])}[/]")

    if checks:
        table = Table(title="5. Targets")
        table.add_column("target")
        table.add_column("result")
        table.add_column("figure", justify="right")
        for name, ok, detail in checks:
            table.add_row(name, "[green]PASS[/]" if ok else "[red]MISS[/]", detail)
        console.print(table)
    return checks


# -- main ---------------------------------------------------------------------------------

SECTIONS = ("throughput", "lag", "rss", "sleep")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/e2e.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
        return lambda s: [kind(x) for x in s.split(",") if x]

    parser.add_argument(
        "--sections",
        type=csv(str),
        default=list(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (rss and sleep share one measurement)",
    )
    parser.add_argument(
        "--backends",
        type=csv(str),
        default=["postgres", "sqlite"],
        help="backends for the throughput section",
    )
    parser.add_argument(
        "--workers",
        type=csv(int),
        default=[1, 2],
        help="worker process counts for the throughput section",
    )
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per throughput measurement")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up tasks before each")
    parser.add_argument(
        "--in-flight", type=int, default=256, help="publishes awaiting their JetStream ack at once"
    )
    parser.add_argument(
        "--latency-tasks",
        type=int,
        default=100,
        help="tasks sent one at a time for the unloaded latency",
    )
    parser.add_argument(
        "--bare-concurrency",
        type=int,
        default=16,
        help="concurrency of the bare agent.run baseline",
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare baseline")
    parser.add_argument(
        "--lag-backends",
        type=csv(str),
        default=["postgres", "sqlite"],
        help="backends for the projection-lag section",
    )
    parser.add_argument("--lag-rate", type=int, default=50, help="runs/s offered")
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="duration of the load")
    parser.add_argument(
        "--lag-workers", type=int, default=2, help="worker processes during the lag load"
    )
    parser.add_argument(
        "--lag-poll-ms", type=float, default=10.0, help="how often the bench polls the runs view"
    )
    parser.add_argument(
        "--sleep-backends",
        type=csv(str),
        default=["postgres", "sqlite"],
        help="backends for the 200 x 1 s / RSS section (one worker process each)",
    )
    parser.add_argument(
        "--sleep-tasks", type=int, default=200, help="concurrent slow runs (rss and sleep)"
    )
    parser.add_argument(
        "--no-sync-always",
        dest="sync_always",
        action="store_false",
        help="run nats-server without `sync_interval: always` (it is on by default, as in "
        "production)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for worker/projector processes, e.g. "
        "AGENTLEDGER_STORE_THREADS=16 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="attach py-spy to the workers (and the projector) during each "
        "throughput and lag measurement "
        "and write collapsed stacks to DIR (summarise with "
        "bench/profile_summary.py); distorts the figures",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--profile-all-threads",
        action="store_true",
        help="sample every non-idle thread, not only the one holding the GIL "
        "(threads waiting on the database then show up as busy)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 tasks, 50 warm-up, 5 s of lag load"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.warmup, args.lag_seconds, args.latency_tasks = 200, 50, 5.0, 20
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    for name in ("backends", "lag_backends", "sleep_backends"):
        bad = set(getattr(args, name)) - {"postgres", "sqlite"}
        if bad:
            parser.error(f"--{name.replace('_', '-')}: unknown backend(s) {', '.join(bad)}")
    env: dict[str, str] = {}
    for item in args.worker_env:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--worker-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    args.worker_env = env
    return args


async def main_async(args: argparse.Namespace, root: Path) -> Results:
    results = Results()
    results.meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "revision": git_revision(),
        "sync_always": args.sync_always,
        "worker_env": " ".join(f"{k}={v}" for k, v in args.worker_env.items()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    servers = Servers(root=root, sync_always=args.sync_always)
    profiler = Profiler(args.profile, args.profile_rate, gil=not args.profile_all_threads)
    started = time.perf_counter()
    try:
        if "throughput" in args.sections and not args.no_bare:
            console.print("  bare agent.run baseline ...")
            await bare_baseline(args, results)
        if "throughput" in args.sections:
            await throughput(args, servers, root, results, profiler)
        if "lag" in args.sections:
            await lag(args, servers, root, results, profiler)
        if "sleep" in args.sections or "rss" in args.sections:
            await sleepy(args, servers, root, results)
    finally:
        servers.stop()
    results.meta["duration_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="agentledger-bench-"))
    console.print(
        f"[bold]agentledger e2e bench[/]: sections {', '.join(args.sections)}; data in {root}"
    )
    try:
        results = asyncio.run(main_async(args, root))
    finally:
        _kill_children()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    checks = report(args, results)
    console.print(f"[dim]bench took {results.meta['duration_s']:.0f} s[/]")
    if args.json is not None:
        payload = asdict(results)
        payload["checks"] = [{"target": n, "passed": ok, "figure": d} for n, ok, d in checks]
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        console.print(f"figures written to {args.json}")
    if args.profile is not None:
        console.print(
            f"py-spy stacks in {args.profile}: python bench/profile_summary.py {args.profile}/*.txt"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
