"""The example graph of the scope document, written with pydantic-graph's own API:

1. `prepare` (a function step) cleans the transactions and sums them;
2. `analyse` (an agent step) asks the `risk_analyst` agent for a risk score;
3. `risk_decision` branches on the score;
4. `escalate` (high risk, score >= 0.7) or `approve` (normal) handles the case.

Run it with `agentledger publish-graph review '{"customer": "acme", "amounts": [...]}'`.

`pipeline` is a three-step line whose steps take `pause_s` seconds each and note which
process ran them: the README's crash-and-resume walkthrough kills a worker inside it.
"""

# mypy 2.4 reads pydantic-graph's StepContext as not generic (its TypeVars use
# infer_variance): the annotations below are for readers and for pydantic.
# mypy: disable-error-code="type-arg, attr-defined"

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from pydantic_graph import GraphBuilder, StepContext

from agentledger.handlers.graphs import agent_step

__all__ = ["Job", "JobState", "Review", "ReviewState", "Transactions", "pipeline", "review"]

HIGH_RISK = 0.7


class Transactions(BaseModel):
    customer: str
    amounts: list[float]


class Prepared(BaseModel):
    customer: str
    total: float
    count: int


class Review(BaseModel):
    customer: str
    risk: float
    decision: str


@dataclass
class ReviewState:
    customer: str = ""
    dropped: int = 0
    """Invalid amounts (zero or negative) left out by `prepare`."""
    notes: list[str] = field(default_factory=list)


g = GraphBuilder(state_type=ReviewState, input_type=Transactions, output_type=Review)


@g.step
async def prepare(ctx: StepContext[ReviewState, None, Transactions]) -> Prepared:
    valid = [a for a in ctx.inputs.amounts if a > 0]
    ctx.state.customer = ctx.inputs.customer
    ctx.state.dropped = len(ctx.inputs.amounts) - len(valid)
    return Prepared(customer=ctx.inputs.customer, total=sum(valid), count=len(valid))


@g.step
async def analyse(ctx: StepContext[ReviewState, None, Prepared]) -> float:
    p = ctx.inputs
    answer = await agent_step(
        "risk_analyst", f"customer {p.customer}: total {p.total} over {p.count} payments"
    )
    match = re.search(r"\d+(?:\.\d+)?", str(answer))
    score = float(match.group()) if match else 1.0  # an unreadable answer is high risk
    ctx.state.notes.append(f"analyst: {answer}")
    return score


@g.step
async def escalate(ctx: StepContext[ReviewState, None, float]) -> Review:
    ctx.state.notes.append("escalated to a human reviewer")
    return Review(customer=ctx.state.customer, risk=ctx.inputs, decision="escalated")


@g.step
async def approve(ctx: StepContext[ReviewState, None, float]) -> Review:
    ctx.state.notes.append("approved automatically")
    return Review(customer=ctx.state.customer, risk=ctx.inputs, decision="approved")


g.add(
    g.edge_from(g.start_node).to(prepare),
    g.edge_from(prepare).to(analyse),
    g.edge_from(analyse).to(
        g.decision(node_id="risk_decision", note="risk score")
        .branch(g.match(float, matches=lambda score: score >= HIGH_RISK).label("high").to(escalate))
        .branch(g.match(float).label("normal").to(approve))
    ),
    g.edge_from(escalate, approve).to(g.end_node),
)
review = g.build()


class Job(BaseModel):
    pause_s: float = Field(default=0.0, ge=0, le=60)
    """How long each step takes (a window to kill a worker in)."""


@dataclass
class JobState:
    ran_in: dict[str, str] = field(default_factory=dict)
    """Step name -> the process that ran it."""


p = GraphBuilder(state_type=JobState, input_type=Job, output_type=dict[str, str])


async def _work(ctx: StepContext[JobState, None, Job], name: str) -> Job:
    await asyncio.sleep(ctx.inputs.pause_s)
    ctx.state.ran_in[name] = f"pid {os.getpid()}"  # which worker process ran the step
    return ctx.inputs


@p.step
async def fetch(ctx: StepContext[JobState, None, Job]) -> Job:
    return await _work(ctx, "fetch")


@p.step
async def enrich(ctx: StepContext[JobState, None, Job]) -> Job:
    return await _work(ctx, "enrich")


@p.step
async def deliver(ctx: StepContext[JobState, None, Job]) -> dict[str, str]:
    await _work(ctx, "deliver")
    return dict(ctx.state.ran_in)


p.add(
    p.edge_from(p.start_node).to(fetch),
    p.edge_from(fetch).to(enrich),
    p.edge_from(enrich).to(deliver),
    p.edge_from(deliver).to(p.end_node),
)
pipeline = p.build()
