"""Graphs for the executor tests, written with pydantic-graph's own API. Every step
counts its real executions in CALLS."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic_graph import (
    BaseNode,
    End,
    GraphBuilder,
    GraphRunContext,
    StepContext,
    reduce_dict_update,
    reduce_list_append,
)

from agentledger.domain.graphs.run import GraphHistory, GraphRun
from agentledger.handlers.graphs.executor import (
    GraphExecutor,
    GraphPausedForInput,
    call_agents,
    wait_for_input,
)

CALLS: list[str] = []


@dataclass
class State:
    log: list[str] = field(default_factory=list)
    total: int = 0


async def jitter() -> None:
    await asyncio.sleep(random.random() * 0.005)


g = GraphBuilder(state_type=State, input_type=int, output_type=dict[str, Any])


@g.step
async def ingest(ctx: StepContext[State, None, int]) -> int:
    await jitter()
    CALLS.append("ingest")
    ctx.state.log.append("ingest")
    return ctx.inputs * 2


@g.step
async def size(ctx: StepContext[State, None, int]) -> Literal["big", "small"]:
    CALLS.append("size")
    return "big" if ctx.inputs >= 10 else "small"


@g.step
async def prep(ctx: StepContext[State, None, str]) -> str:
    CALLS.append("prep")
    return f"prep-{ctx.inputs}"


def _branch(name: str) -> Any:
    async def branch(ctx: StepContext[State, None, str]) -> dict[str, str]:
        await jitter()
        CALLS.append(name)
        ctx.state.log.append(name)
        return {name: f"{name}({ctx.inputs})"}

    branch.__name__ = name
    return g.step(branch)


b1, b2, b3 = _branch("b1"), _branch("b2"), _branch("b3")
collect = g.join(reduce_dict_update, initial_factory=dict, node_id="collect")


@g.step
async def explode(ctx: StepContext[State, None, dict[str, str]]) -> list[str]:
    CALLS.append("explode")
    return sorted(ctx.inputs)


@g.step
async def small(ctx: StepContext[State, None, str]) -> list[str]:
    CALLS.append("small")
    return ["x", "y"]


@g.step
async def work(ctx: StepContext[State, None, str]) -> str:
    await jitter()
    CALLS.append(f"work:{ctx.inputs}")
    ctx.state.total += 1
    ctx.state.log.append(f"work:{ctx.inputs}")
    return ctx.inputs.upper()


gather = g.join(reduce_list_append, initial_factory=list, node_id="gather")


@g.step
async def finish(ctx: StepContext[State, None, list[str]]) -> dict[str, Any]:
    CALLS.append("finish")
    return {"items": ctx.inputs, "total": ctx.state.total}


g.add(
    g.edge_from(g.start_node).to(ingest),
    g.edge_from(ingest).to(size),
    g.edge_from(size).to(
        g.decision(node_id="route")
        .branch(g.match(Literal["big"]).to(prep))
        .branch(g.match(Literal["small"]).to(small))
    ),
    g.edge_from(prep).to(b1, b2, b3, fork_id="fan"),
    g.edge_from(b1, b2, b3).to(collect),
    g.edge_from(collect).to(explode),
    g.edge_from(explode).map(fork_id="each").to(work),
    g.edge_from(small).map(fork_id="each_small").to(work),
    g.edge_from(work).to(gather),
    g.edge_from(gather).to(finish),
    g.edge_from(finish).to(g.end_node),
)
fan_graph = g.build()
"""ingest -> size -> route: big -> prep -> (b1 | b2 | b3) -> collect -> explode -> map
work -> gather -> finish; small -> small -> map work -> gather -> finish."""


# A cycle that never ends: count -> count -> ...
c = GraphBuilder(state_type=State, input_type=int, output_type=int)


@c.step
async def count(ctx: StepContext[State, None, int]) -> int:
    CALLS.append("count")
    return ctx.inputs + 1


c.add(
    c.edge_from(c.start_node).to(count),
    c.edge_from(count).to(
        c.decision(node_id="again")
        .branch(c.match(int, matches=lambda n: n < 10**9).to(count))
        .branch(c.match(int).to(c.end_node))
    ),
)
cycle_graph = c.build()


# A pause for human approval between two steps.
h = GraphBuilder(state_type=State, input_type=str, output_type=str)


@h.step
async def draft(ctx: StepContext[State, None, str]) -> str:
    CALLS.append("draft")
    return f"draft of {ctx.inputs}"


@h.step
async def approve(ctx: StepContext[State, None, str]) -> str:
    answer = await wait_for_input({"question": f"approve {ctx.inputs!r}?"}, str)
    CALLS.append("approve")
    return f"{ctx.inputs}: {answer}"


@h.step
async def publish(ctx: StepContext[State, None, str]) -> str:
    CALLS.append("publish")
    return f"published ({ctx.inputs})"


h.add(
    h.edge_from(h.start_node).to(draft),
    h.edge_from(draft).to(approve),
    h.edge_from(approve).to(publish),
    h.edge_from(publish).to(h.end_node),
)
approval_graph = h.build()


async def recorded(graph: Any, name: str, inputs: Any) -> tuple[GraphRun, list[Any], Any]:
    """Run `graph` to its end or pause on an in-memory record: (run, its events, output)."""
    run = GraphRun(
        task_id=f"task-{name}",
        graph=name,
        inputs=inputs,
        state=None,
        metadata={},
        max_steps=100,
        deadline=None,
    )
    stored = list(run.collect_events())

    async def save() -> None:
        stored.extend(run.collect_events())

    executor = GraphExecutor(graph, run, GraphHistory.fold(stored), save=save)
    try:
        output = await executor.execute(inputs)
    except GraphPausedForInput as paused:
        run.pause(paused.key, paused.node_id, paused.prompt)
        output = None
    else:
        run.complete(executor.dump_output(output), duration_ms=12.5)
    stored.extend(run.collect_events())
    return run, stored, output


# A BaseNode-style graph (pydantic-graph's older node API, on the same builder).
@dataclass
class CountState:
    history: list[int] = field(default_factory=list)


@dataclass
class CountFrom(BaseNode[CountState, None, int]):
    n: int

    async def run(self, ctx: GraphRunContext[CountState, None]) -> CountDown:
        CALLS.append(f"CountFrom({self.n})")
        return CountDown(self.n)


@dataclass
class CountDown(BaseNode[CountState, None, int]):
    n: int

    async def run(self, ctx: GraphRunContext[CountState, None]) -> CountDown | End[int]:
        CALLS.append(f"CountDown({self.n})")
        ctx.state.history.append(self.n)
        return End(sum(ctx.state.history)) if self.n <= 1 else CountDown(self.n - 1)


n = GraphBuilder(state_type=CountState, input_type=CountFrom, output_type=int)
n.add(n.edge_from(n.start_node).to(CountFrom), n.node(CountFrom), n.node(CountDown))
countdown_graph = n.build()


# A decision on a module-level threshold: tests change LIMIT to change the decision.
LIMIT = 5
t = GraphBuilder(state_type=State, input_type=int, output_type=str)


@t.step
async def score(ctx: StepContext[State, None, int]) -> int:
    CALLS.append("score")
    return ctx.inputs


@t.step
async def high(ctx: StepContext[State, None, int]) -> str:
    CALLS.append("high")
    return f"high {ctx.inputs}"


@t.step
async def low(ctx: StepContext[State, None, int]) -> str:
    CALLS.append("low")
    return f"low {ctx.inputs}"


t.add(
    t.edge_from(t.start_node).to(score),
    t.edge_from(score).to(
        t.decision(node_id="gate")
        .branch(t.match(int, matches=lambda s: s >= LIMIT).to(high))
        .branch(t.match(int).to(low))
    ),
    t.edge_from(high, low).to(t.end_node),
)
threshold_graph = t.build()
"""score -> gate: score >= LIMIT -> high, else low."""


# A step whose float output overflows to infinity.
o = GraphBuilder(input_type=float, output_type=float)


@o.step
async def blow_up(ctx: StepContext[None, None, float]) -> float:
    return ctx.inputs * 1e308 * 10


o.add(o.edge_from(o.start_node).to(blow_up), o.edge_from(blow_up).to(o.end_node))
overflow_graph = o.build()


# Orchestration: one step fans a prompt out to child agent tasks over NATS (any worker
# runs them), the next merges their answers. Input: [agent, prompt] pairs.
o = GraphBuilder(state_type=State, input_type=list[list[str]], output_type=dict[str, Any])


@o.step
async def fan_out(ctx: StepContext[State, None, list[list[str]]]) -> list[dict[str, Any]]:
    outcomes = await call_agents([(agent, prompt) for agent, prompt in ctx.inputs])
    CALLS.append("fan_out")
    return [
        {"task_id": x.task_id, "status": x.status, "output": x.output, "error": x.error}
        for x in outcomes
    ]


@o.step
async def merge(ctx: StepContext[State, None, list[dict[str, Any]]]) -> dict[str, Any]:
    CALLS.append("merge")
    done = [r["output"] for r in ctx.inputs if r["status"] == "completed"]
    failed = [r for r in ctx.inputs if r["status"] != "completed"]
    return {"outputs": done, "failed": len(failed), "children": [r["task_id"] for r in ctx.inputs]}


o.add(
    o.edge_from(o.start_node).to(fan_out),
    o.edge_from(fan_out).to(merge),
    o.edge_from(merge).to(o.end_node),
)
fanout_graph = o.build()
