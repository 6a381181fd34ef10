#!/usr/bin/env python
"""Summarise py-spy collapsed stacks (`py-spy record --format raw --threads`) of a worker.

    python bench/profile_summary.py /tmp/prof/postgres-1w-pid123.txt [more files]

Prints, as % of all (non-idle) samples: the threads; the components (library or project
package) by inclusive and by self time; the project functions by inclusive time; the
hottest leaf functions; and, for each project function that calls into a library, what
the time below it is spent in (e.g. `infra/event_store.py:save -> psycopg`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 140)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")

# First match wins: more specific paths first.
COMPONENTS: list[tuple[str, str]] = [
    ("pydantic_ai/", "pydantic-ai"),
    ("pydantic_graph/", "pydantic-graph"),
    ("pydantic_core/", "pydantic-core"),
    ("pydantic/", "pydantic"),
    ("eventsourcing/", "eventsourcing"),
    ("psycopg_pool/", "psycopg"),
    ("psycopg/", "psycopg"),
    ("sqlite3/", "sqlite3"),
    ("faststream/", "faststream"),
    ("fast_depends/", "fast-depends (faststream DI)"),
    ("nats/", "nats-py"),
    ("structlog/", "structlog"),
    ("opentelemetry/", "opentelemetry"),
    ("logfire", "logfire"),
    ("anyio/", "anyio"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio"),
    ("concurrent/", "concurrent.futures"),
    ("threading.py", "threading"),
    ("handlers/", "agentledger handlers"),
    ("infra/", "agentledger infra"),
    ("domain/", "agentledger domain"),
    ("projections/", "agentledger projections"),
    ("catalog/", "agent code (catalog)"),
    ("bench/", "agent code (bench)"),
]
PROJECT = ("handlers/", "infra/", "domain/", "projections/")
# Plumbing that is charged to whoever called it in the "attributed" view.
PLUMBING = {
    "asyncio",
    "anyio",
    "threading",
    "concurrent.futures",
    "other: dataclasses.py",
    "other: copy.py",
    "other: typing.py",
    "other: contextlib.py",
    "other: <string>",
    "other: weakref.py",
    "other: _weakrefset.py",
    "other: <frozen abc>",
    "other: copyreg.py",
    "other: functools.py",
    "other: inspect.py",
    "other: uuid.py",
    "other: random.py",
    "other: queue.py",
    "other: selectors.py",
    "other: re",
    "other: reprlib.py",
    "other: collections",
    "other: enum.py",
    "other: abc.py",
    "json (stdlib)",
    "other: typer",
}
_LOOP_FRAMES = (
    "Handle._run",
    "TaskHandle._run_coro",
    "Task.__step",
    "Task.__step_run_and_handle_result",
)


def attributed(frames: list[tuple[str, str]]) -> str:
    """The innermost non-plumbing component of the stack (project code counts by package);
    plumbing-only stacks (the event loop itself) are 'event loop / threads'."""
    for _, file in reversed(frames):
        comp = component(file)
        if comp not in PLUMBING:
            return comp
    return "event loop / thread plumbing (no caller)"


def task_root(frames: list[tuple[str, str]]) -> str:
    """The coroutine an event-loop task (or a thread) is running: the first frame after
    the last event-loop / thread-pool frame."""
    start = 0
    for i, (func, file) in enumerate(frames):
        if (
            func in _LOOP_FRAMES
            or (func == "_worker" and "concurrent/" in file)
            or (func == "WorkerThread.run" and "anyio/" in file)
        ):
            start = i + 1
    for func, file in frames[start:]:
        if component(file) not in PLUMBING - {"other: typer"}:
            return f"{file}:{func}"
    return "(event loop itself)"


def component(file: str) -> str:
    for needle, name in COMPONENTS:
        if needle in file:
            return name
    return "other: " + file.split("/")[0]


def parse(line: str) -> tuple[str, list[tuple[str, str]], int] | None:
    body, _, count = line.rstrip("\n").rpartition(" ")
    if not body or not count.isdigit():
        return None
    parts = body.split(";")
    thread = "?"
    if parts and parts[0].startswith("thread ("):
        thread = re.sub(r"^thread \(\d+\):? ?", "", parts.pop(0)) or "thread"
        thread = re.sub(r"_\d+$", "_N", thread)  # store_0, store_1 ... -> store_N
    frames = []
    for part in parts:
        m = _FRAME.match(part)
        if m:
            frames.append((m["func"], m["file"]))
        else:
            frames.append((part, "?"))
    return thread, frames, int(count)


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:5.1f}%"


def table(title: str, rows: list[tuple[str, int]], total: int, limit: int, what: str) -> None:
    t = Table(title=title)
    t.add_column(what)
    t.add_column("% samples", justify="right")
    for name, n in rows[:limit]:
        t.add_row(name, pct(n, total))
    console.print(t)


def summarise(paths: list[Path], limit: int) -> None:
    threads: Counter[str] = Counter()
    incl_comp: Counter[str] = Counter()
    self_comp: Counter[str] = Counter()
    incl_func: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    below: Counter[str] = Counter()
    owner: Counter[str] = Counter()
    roots: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            parsed = parse(line)
            if parsed is None:
                continue
            thread, frames, n = parsed
            total += n
            threads[thread] += n
            if not frames:
                continue
            for comp in {component(f) for _, f in frames}:
                incl_comp[comp] += n
            owner[attributed(frames)] += n
            roots[task_root(frames)] += n
            leaf_func, leaf_file = frames[-1]
            self_comp[component(leaf_file)] += n
            self_func[f"{leaf_file}:{leaf_func}"] += n
            for key in {f"{f}:{fn}" for fn, f in frames if f.startswith(PROJECT)}:
                incl_func[key] += n
            # The innermost project frame, and the component of the leaf below it.
            inner = [(fn, f) for fn, f in frames if f.startswith(PROJECT)]
            if inner:
                fn, f = inner[-1]
                below[f"{f}:{fn} -> {component(leaf_file)}"] += n
            else:
                below[f"(no project frame) -> {component(leaf_file)}"] += n
    if total == 0:
        console.print("no samples")
        return
    console.print(f"[bold]{total} samples[/] from {', '.join(p.name for p in paths)}")
    table("threads", threads.most_common(), total, limit, "thread")
    table(
        "components, inclusive (any frame in the stack)",
        incl_comp.most_common(),
        total,
        limit,
        "component",
    )
    table("components, self (the leaf frame)", self_comp.most_common(), total, limit, "component")
    table(
        "attributed: innermost library or project package (stdlib plumbing such as "
        "asyncio, anyio, dataclasses, copy is charged to its caller)",
        owner.most_common(),
        total,
        limit,
        "component",
    )
    table(
        "task roots: the coroutine (or thread function) each sample runs under",
        roots.most_common(),
        total,
        limit,
        "task root",
    )
    table("project functions, inclusive", incl_func.most_common(), total, limit, "function")
    table(
        "innermost project frame -> component of the leaf",
        below.most_common(),
        total,
        limit,
        "where",
    )
    table("hottest leaf functions (self)", self_func.most_common(), total, limit, "function")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw output files")
    parser.add_argument("--limit", type=int, default=25, help="rows per table")
    args = parser.parse_args(argv)
    summarise(args.files, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
