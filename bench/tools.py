#!/usr/bin/env python
"""Tool middleware overhead (issue 12), against the bare tool in the same run:

    python bench/tools.py [--calls 5000] [--kv-calls 1000]

1. Each policy alone, no I/O: the wall time per call of a `FunctionToolset` tool called
   through `ToolMiddleware` (log, timeout, retry, circuit breaker, rate limit and cache on
   the in-process state) minus the same tool called bare. The log policy writes its
   lines to a null sink, so the figure is the middleware's own work, not the terminal's.
2. Over NATS KV (an embedded nats-server): a cache hit, a cache miss (get + put) and a
   rate-limit start (get + compare-and-set), against raw nats-py `kv.get` / `kv.put` on
   the same bucket: the floor any shared state over NATS pays.
3. Inside a recorded run: the ledger (`LedgerToolset` + `StepRecorder` on an in-memory
   event store) with a cache hit recorded as `ToolDecisionMade`, against the ledger alone.

Targets (issue 12): under 0.5 ms per call without I/O; a cache hit under 2 ms over KV.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT)]

import nats  # noqa: E402
import structlog  # noqa: E402
from pydantic_ai import RunContext  # noqa: E402
from pydantic_ai.models.test import TestModel  # noqa: E402
from pydantic_ai.toolsets import FunctionToolset  # noqa: E402
from pydantic_ai.usage import RunUsage  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agentledger.domain.run import AgentRun, RunHistory  # noqa: E402
from agentledger.domain.tools.policies import MiddlewareSpec  # noqa: E402
from agentledger.handlers.recording import StepRecorder, wrap_toolsets  # noqa: E402
from agentledger.handlers.tools import ToolMiddleware  # noqa: E402
from agentledger.infra.event_store import AsyncEventStore, EventStore  # noqa: E402
from agentledger.infra.nats_server import EmbeddedNats  # noqa: E402
from agentledger.infra.tools.state import MemoryToolState, NatsToolState  # noqa: E402

console = Console()


async def lookup(city: str, days: int = 1) -> str:
    """The tool: no I/O of its own."""
    return f"{city}: sunny for {days} days"


def _ctx(call_id: str = "c1") -> RunContext[None]:
    return RunContext(deps=None, model=TestModel(), usage=RunUsage(), tool_call_id=call_id)


Caller = Callable[[int], Awaitable[Any]]


async def _per_call_us(call: Caller, n: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean wall time per call, in microseconds."""
    for i in range(min(n, 200)):  # warm up
        await call(i)
    means = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            await call(i)
        means.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(means)


async def _caller(toolset: Any, *, vary: bool = False) -> Caller:
    ctx = _ctx()
    tool = (await toolset.get_tools(ctx))["lookup"]

    async def call(i: int) -> Any:
        args = {"city": f"city-{i}" if vary else "Oslo", "days": 3}
        return await toolset.call_tool("lookup", args, ctx, tool)

    return call


POLICIES: dict[str, dict[str, Any]] = {
    "log (null sink)": {"log": True},
    "timeout_s": {"timeout_s": 5},
    "retry (no failure)": {"retry": {"on": ["ConnectionError"]}},
    "circuit_breaker (closed)": {"circuit_breaker": {"failures": 5}},
    "rate_limit (in-process, never full)": {"rate_limit": "10000/ms"},
    "cache hit (in-process)": {"cache": {"ttl_s": 600}},
    "all six (cache hit in-process)": {
        "log": True,
        "timeout_s": 5,
        "retry": {"on": ["ConnectionError"]},
        "circuit_breaker": {"failures": 5},
        "rate_limit": "10000/ms",
        "cache": {"ttl_s": 600},
    },
    "all but cache (in-process limit)": {
        "log": True,
        "timeout_s": 5,
        "retry": {"on": ["ConnectionError"]},
        "circuit_breaker": {"failures": 5},
        "rate_limit": "10000/ms",
    },
}


async def section_local(n: int) -> Table:
    bare = await _per_call_us(await _caller(FunctionToolset([lookup])), n)
    table = Table(title=f"1. Per tool call, no I/O ({n} calls x 5, median of means)")
    for column in ("policy", "us per call", "overhead us", "target < 500 us"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    table.add_row("bare tool (baseline)", f"{bare:.1f}", "-", "-")
    for name, policy in POLICIES.items():
        toolset = ToolMiddleware(
            FunctionToolset([lookup]),
            spec=MiddlewareSpec.model_validate(policy),
            state=MemoryToolState(),
        )
        took = await _per_call_us(await _caller(toolset), n)
        overhead = took - bare
        table.add_row(name, f"{took:.1f}", f"{overhead:.1f}", "PASS" if overhead < 500 else "FAIL")
    return table


async def section_kv(url: str, n: int) -> Table:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = NatsToolState(js, "BENCH")
        # Raw nats-py on the very bucket the cache uses (created by a first put).
        cached = ToolMiddleware(
            FunctionToolset([lookup]),
            spec=MiddlewareSpec.model_validate({"cache": {"ttl_s": 600}}),
            state=state,
        )
        hit = await _caller(cached)
        await hit(0)
        kv = await js.key_value("BENCH_TOOL_CACHE")
        key = (await kv.keys())[0]
        value = (await kv.get(key)).value or b""

        async def raw_get(i: int) -> Any:
            return await kv.get(key)

        async def raw_put(i: int) -> Any:
            return await kv.put(f"raw.{i % 100}", value)

        miss = await _caller(cached, vary=True)
        limited = ToolMiddleware(
            FunctionToolset([lookup]),
            spec=MiddlewareSpec.model_validate({"rate_limit": "10000/ms"}),
            state=state,
        )
        take = await _caller(limited)
        rows = [
            ("raw nats-py kv.get (baseline)", await _per_call_us(raw_get, n)),
            ("raw nats-py kv.put (baseline)", await _per_call_us(raw_put, n)),
            ("cache hit through the middleware", await _per_call_us(hit, n)),
            ("cache miss: get, tool, put", await _per_call_us(miss, n, repeats=1)),
            ("rate-limit start: get + compare-and-set", await _per_call_us(take, n)),
        ]
    finally:
        await nc.drain()
    table = Table(title=f"2. Over NATS KV ({n} calls, one at a time)")
    for column in ("what", "ms per call", "target"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for name, us in rows:
        target = ""
        if name.startswith("cache hit"):
            target = "PASS (< 2 ms)" if us < 2000 else "FAIL (< 2 ms)"
        table.add_row(name, f"{us / 1000:.3f}", target)
    return table


async def section_recorded(n: int) -> Table:
    """The ledger records every call (one save each); the cache hit adds its decision
    to that save."""
    results = {}
    for name, policy in (
        ("ledger, bare tool", None),
        ("ledger, cache hit", {"cache": {"ttl_s": 600}}),
    ):
        store = AsyncEventStore(EventStore.in_memory(), threads=0, retry_s=0)
        run = AgentRun(
            task_id=f"bench-{name}",
            agent="bench",
            prompt="go",
            session_id=None,
            metadata={},
            usage_limits={},
            deadline=None,
            history_version=0,
        )
        await store.save(run)
        recorder = StepRecorder(run=run, store=store)
        inner: Any = FunctionToolset([lookup])
        if policy is not None:
            inner = ToolMiddleware(
                inner, spec=MiddlewareSpec.model_validate(policy), state=MemoryToolState()
            )
        (ledger,) = wrap_toolsets([inner], recorder, RunHistory())
        tool = (await ledger.get_tools(_ctx()))["lookup"]

        async def call(i: int, ledger: Any = ledger, tool: Any = tool) -> Any:
            return await ledger.call_tool(
                "lookup", {"city": "Oslo"}, _ctx(f"c{i}-{time.perf_counter_ns()}"), tool
            )

        results[name] = await _per_call_us(call, n, repeats=3)
        decisions = sum(
            1 for e in store.sync.events(run.id) if isinstance(e, AgentRun.ToolDecisionMade)
        )
        results[name + " decisions"] = decisions
        store.close()
    table = Table(title=f"3. Inside a recorded run (in-memory event store, {n} calls x 3)")
    for column in ("what", "us per call", "overhead us"):
        table.add_column(column, justify="right" if column != "what" else "left")
    base = results["ledger, bare tool"]
    table.add_row("ledger, bare tool (baseline)", f"{base:.1f}", "-")
    hit = results["ledger, cache hit"]
    table.add_row(
        "ledger, cache hit + its ToolDecisionMade event",
        f"{hit:.1f}",
        f"{hit - base:.1f}",
    )
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per local figure")
    parser.add_argument("--kv-calls", type=int, default=1000, help="calls per NATS KV figure")
    args = parser.parse_args()
    # The log policy's lines go nowhere: the figure is the middleware, not the terminal.
    structlog.configure(
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    console.print(await section_local(args.calls))
    root = Path(tempfile.mkdtemp(prefix="agentledger-bench-tools-"))
    server = EmbeddedNats(store_dir=root / "nats").start()
    try:
        console.print(await section_kv(server.url, args.kv_calls))
    finally:
        server.stop()
    console.print(await section_recorded(min(args.calls, 2000)))


if __name__ == "__main__":
    asyncio.run(main())
