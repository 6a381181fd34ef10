"""`agentledger graph list|show`: the catalog's graphs, and each one drawn as Mermaid."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from agentledger.handlers.cli_support import (
    CliError,
    console,
    notify,
    one_line_errors,
    print_json,
    query_views,
    run,
    settings_from_env,
)

if TYPE_CHECKING:
    from agentledger.handlers.catalog import Catalog

__all__ = ["register", "send_task"]

graph_app = typer.Typer(
    help="Durable graph workflows: list and show the catalog's graphs; publish, resume"
    " and cancel graph tasks.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _catalog() -> Catalog:
    from agentledger.handlers.bootstrap import load_catalog

    return load_catalog(settings_from_env())


@graph_app.command("list")
@one_line_errors
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the catalog's graphs (each is loaded and checked)."""
    catalog = _catalog()
    rows: list[dict[str, Any]] = []
    for name in sorted(catalog.graphs):
        entry = catalog.graphs[name]
        graph = entry.graph
        steps = sorted(str(n) for n in graph.nodes if not str(n).startswith("__"))
        rows.append(
            {
                "name": name,
                "ref": entry.ref,
                "description": entry.description,
                "max_steps": entry.max_steps,
                "nodes": steps,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Graphs in {catalog.path} ({len(rows)})")
    for column in ("name", "nodes", "max steps", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"], ", ".join(row["nodes"]), str(row["max_steps"]), row["description"]
        )
    console.print(table)


@graph_app.command()
@one_line_errors
def show(
    name: str = typer.Argument(..., help="The graph's catalog name."),
    direction: str = typer.Option("TB", help="Mermaid direction: TB, LR, RL or BT."),
) -> None:
    """Print the graph as a Mermaid state diagram (pydantic-graph's own rendering)."""
    catalog = _catalog()
    if name not in catalog.graphs:
        known = ", ".join(sorted(catalog.graphs)) or "none"
        raise CliError(f"unknown graph {name!r}; the catalog has: {known}")
    if direction not in ("TB", "LR", "RL", "BT"):
        raise CliError(f"invalid --direction {direction!r}: use TB, LR, RL or BT")
    print(catalog.graphs[name].graph.render(title=name, direction=direction))  # type: ignore[arg-type]


async def _send(subject: str, payload: dict[str, Any], msg_id: str, timeout: float) -> Any:
    """Publish a graph message (`<prefix>.tasks.graph.<subject>`) and wait for its answer."""
    return await send_task(
        lambda prefix: f"{prefix}.tasks.graph.{subject}", payload, msg_id, timeout
    )


async def send_task(
    subject_of: Callable[[str], str], payload: dict[str, Any], msg_id: str, timeout: float
) -> Any:
    """Publish a task message as any NATS client does (on `subject_of(prefix)`) and wait
    for its answer (the stored outcome when JetStream drops it as a duplicate)."""
    from nats.js.errors import NotFoundError

    from agentledger.domain.subjects import results_stream, results_subject
    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.infra.nats import ensure_streams

    settings = settings_from_env()
    prefix = settings.subject_prefix
    nc = await connect_nats(settings, "agentledger-cli")
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        ack = await js.publish(
            subject_of(prefix),
            json.dumps(payload).encode(),
            headers={"Nats-Msg-Id": msg_id, "Agentledger-Reply-To": inbox},
        )
        if ack.duplicate:
            notify(f"notice: message id {msg_id} was already published; showing the stored outcome")
            try:
                stored = await js.get_last_msg(
                    results_stream(prefix), results_subject(prefix, payload["task_id"])
                )
            except NotFoundError:
                raise CliError(f"no stored outcome for task {payload['task_id']} yet") from None
            return json.loads(stored.data or b"{}")
        try:
            msg = await sub.next_msg(timeout=timeout)
        except TimeoutError:
            raise CliError(
                f"no answer within {timeout:g}s; is `agentledger worker` running?"
            ) from None
        return json.loads(msg.data)
    finally:
        await nc.drain()


def show_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(outcome)
    else:
        table = Table(title=f"Graph task {outcome.get('task_id')}", show_header=False)
        table.add_column("field")
        table.add_column("value", overflow="fold")
        for key in ("graph", "status", "output", "waiting_for", "steps", "error", "run_id"):
            if outcome.get(key) not in (None, 0):
                value = outcome[key]
                table.add_row(key, value if isinstance(value, str) else json.dumps(value))
        console.print(table)
    if outcome.get("status") not in ("completed", "paused"):
        raise typer.Exit(2)


def json_argument(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"invalid {name}: not JSON ({e}); quote strings, e.g. '\"yes\"'") from None


@graph_app.command()
@one_line_errors
def publish(
    name: str = typer.Argument(..., help="The graph's catalog name."),
    inputs: str = typer.Argument("null", help="The graph's input, as JSON."),
    task_id: str = typer.Option(None, help="Task id (idempotency key); default: random."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the outcome."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Publish a RunGraph task and wait for its outcome (completed, failed or paused)."""
    task = task_id or uuid.uuid4().hex
    payload = {"task_id": task, "graph": name, "inputs": json_argument(inputs, "INPUTS")}
    show_outcome(run(_send(name, payload, task, timeout)), as_json)


@graph_app.command()
@one_line_errors
def resume(
    task_id: str = typer.Argument(..., help="The paused graph task's id."),
    value: str = typer.Argument(..., help="The input it waits for, as JSON."),
    resume_id: str = typer.Option(None, help="Id of this resume (applied once); default: random."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the outcome."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Give a paused graph run its input, and wait for what it does next."""
    rid = resume_id or uuid.uuid4().hex
    payload = {"task_id": task_id, "resume_id": rid, "input": json_argument(value, "VALUE")}
    show_outcome(run(_send("resume", payload, rid, timeout)), as_json)


@graph_app.command()
@one_line_errors
def cancel(
    task_id: str = typer.Argument(..., help="The graph task's id."),
    reason: str = typer.Option("cancelled by request", help="Recorded as the failure message."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Cancel a running or paused graph run (it ends failed, kind cancelled)."""
    payload = {"task_id": task_id, "reason": reason}
    show_outcome(run(_send("cancel", payload, uuid.uuid4().hex, timeout)), as_json)


def _graph_query(view: str, arguments: dict[str, Any]) -> Any:
    settings = settings_from_env(announce_store=True)
    return query_views(settings, view, {k: v for k, v in arguments.items() if v is not None})


@graph_app.command()
@one_line_errors
def runs(
    graph: str = typer.Option(None, help="Only runs of this graph."),
    status: str = typer.Option(None, help="running | waiting | paused | completed | failed"),
    limit: int = typer.Option(50, min=1, max=1000, help="At most this many."),
    offset: int = typer.Option(0, min=0, help="Rows to skip first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List graph runs from the graph_runs view, newest first."""
    rows = _graph_query(
        "graph_runs", {"graph": graph, "status": status, "limit": limit, "offset": offset}
    )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Graph runs ({len(rows)})")
    for column in ("task", "graph", "status", "at", "steps", "path", "started (UTC)", "ms"):
        table.add_column(column, overflow="fold")
    for row in rows:
        duration = row["duration_ms"]
        table.add_row(
            row["task_id"],
            row["graph"],
            row["status"] + (f" ({row['error_kind']})" if row["error_kind"] else ""),
            row["current_node"] or "-",
            str(row["steps"]),
            " > ".join(row["path"]),
            row["started_at"][:19],
            "-" if duration is None else f"{duration:.0f}",
        )
    console.print(table)


@graph_app.command("run")
@one_line_errors
def run_(
    task_id: str = typer.Argument(..., help="The graph task's id (or --run-id)."),
    run_id: bool = typer.Option(False, "--run-id", help="TASK_ID is a run id."),
    mermaid: bool = typer.Option(False, help="Print the graph as Mermaid, visited nodes marked."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One graph run: its status, the path it took and each step's timing; with
    --mermaid, the graph drawn with the nodes it visited highlighted."""
    key = "run_id" if run_id else "task_id"
    view = _graph_query("graph_run", {key: task_id})
    if as_json:
        print_json(view)
        return
    if mermaid:
        catalog = _catalog()
        entry = catalog.graphs.get(view["graph"])
        if entry is None:
            raise CliError(f"graph {view['graph']!r} is not in the catalog {catalog.path}")
        print(visited_mermaid(entry.graph.render(title=view["graph"]), view["path"]))
        return
    table = Table(title=f"Graph run {view['task_id']} ({view['graph']})", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for field in (
        "run_id",
        "status",
        "current_node",
        "branches",
        "paused_for",
        "output",
        "error_kind",
        "error_message",
        "started_at",
        "finished_at",
        "duration_ms",
    ):
        value = view[field]
        if value not in (None, {}, ""):
            table.add_row(field, value if isinstance(value, str) else json.dumps(value))
    table.add_row("path", " > ".join(view["path"]) or "-")
    console.print(table)
    steps = Table(title="Step executions")
    for column in ("#", "node", "status", "started (UTC)", "ms", "error"):
        steps.add_column(column, overflow="fold")
    for step in view["step_runs"]:
        ms = step["duration_ms"]
        steps.add_row(
            str(step["seq"]),
            step["node_id"],
            step["status"],
            step["started_at"][11:23],
            "-" if ms is None else f"{ms:.1f}",
            step["error"] or "",
        )
    console.print(steps)


def visited_mermaid(diagram: str, path: list[str]) -> str:
    """pydantic-graph's Mermaid state diagram with the visited nodes in a `visited` class
    (a state diagram has no per-edge styles, so the path shows through its nodes)."""
    visited = list(dict.fromkeys(path))
    if not visited:
        return diagram
    lines = [diagram.rstrip("\n"), "  classDef visited fill:#fdff32,stroke:#333"]
    lines += [f"  class {node} visited" for node in visited]
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.add_typer(graph_app, name="graph")
    # The spelling: `agentledger publish-graph NAME INPUTS`.
    app.command("publish-graph", help="Same as `agentledger graph publish`.")(publish)
