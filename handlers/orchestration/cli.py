"""`agentledger workflow show|messages|list`: graph runs that dispatched child agent
tasks (`call_agents`), their children and the messages they exchanged.

`show` and `messages` read the workflow's events from the event store, as `events`,
`state` and `export` do (`graph show` draws a catalog graph and reads no run; `graph run`
reads the graph_runs view): so they are right however far the projector lags, and need
none running. `show` folds those events with the workflows view's own projection, in
memory, so it shows what the view will hold. `list` reads the workflows view, as
`graph runs` reads graph_runs.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.ids import graph_run_id_for
from agentledger.domain.orchestration.diagram import preview, sequence_diagram
from agentledger.domain.orchestration.flow import workflow_messages
from agentledger.domain.orchestration.messages import AgentMessage
from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    print_json,
    query_views,
    settings_from_env,
)
from agentledger.projections.orchestration import (
    WorkflowChildView,
    WorkflowsProjection,
    WorkflowView,
    get_workflow,
)

__all__ = ["fold_workflow", "register"]

workflow_app = typer.Typer(
    help="Workflows: graph runs that dispatched child agent tasks (`call_agents`); show"
    " one with its children and messages, list them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STYLES = {"completed": "green", "failed": "red", "rejected": "red", "dispatched": "yellow"}
_PREVIEW = 60


def _events(identifier: str) -> list[Any]:
    """The graph-run events of the workflow `identifier` (its task id or run id)."""
    from agentledger.infra.event_store import EventStore

    candidates = []
    try:
        candidates.append(UUID(identifier))
    except ValueError:
        pass
    candidates.append(graph_run_id_for(identifier))
    store = EventStore(settings_from_env(announce_store=True))
    try:
        for candidate in candidates:
            events = store.events(candidate)
            if events and isinstance(events[0], GraphRun.GraphStarted):
                break
        else:
            raise CliError(
                f"no workflow {identifier!r} (tried it as a workflow's task id and run id)"
            )
    finally:
        store.close()
    if not any(isinstance(e, GraphRun.ChildrenDispatched) for e in events):
        raise CliError(
            f"graph run {events[0].task_id!r} dispatched no child tasks, so it is no workflow;"
            f" see `agentledger graph run {events[0].task_id}`"
        )
    return events


def fold_workflow(events: Sequence[object]) -> WorkflowView | None:
    """The workflows view's row of the run that recorded `events`, with its children:
    the view's projection folded over them in an in-memory database."""
    connection = sqlite3.connect(":memory:")
    try:
        cursor = connection.cursor()
        projection = WorkflowsProjection()
        for statement in projection.ddl:
            cursor.execute(statement)
        projection.apply_batch(events, cursor)
        run_ids = {str(getattr(e, "originator_id", "")) for e in events}
        if len(run_ids) != 1:
            raise ValueError("fold_workflow takes the events of one graph run")
        return get_workflow(cursor, run_id=run_ids.pop())
    finally:
        connection.close()


def _short(value: Any) -> str:
    return preview(value, _PREVIEW)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _status(status: str, extra: str | None = None) -> Text:
    text = Text(status, style=_STYLES.get(status, "cyan"))
    if extra:
        text.append(f" ({extra})")
    return text


def _child_line(child: WorkflowChildView) -> Text:
    line = Text.assemble((child.agent, "bold"), "  ", (child.child_task_id, "dim"), "  ")
    line.append_text(_status(child.status))
    line.append(f"  {_ms(child.duration_ms)}")
    if child.error is not None:
        line.append("  " + _short(child.error), style="red")
    elif child.status == "completed":
        line.append("  -> " + _short(child.output))
    if child.kind != "request":
        line.append(f"  [{child.kind}]", style="magenta")
    return line


def _tree(view: WorkflowView) -> Tree:
    tree = Tree(Text(f"Workflow {view.task_id} ({view.graph})", style="bold"))
    steps: dict[str, Tree] = {}
    for child in view.children:
        if child.step_key not in steps:
            steps[child.step_key] = tree.add(Text(f"step {child.node_id}", style="cyan"))
        steps[child.step_key].add(_child_line(child))
    return tree


def _header(view: WorkflowView) -> Table:
    table = Table(title=f"Workflow {view.task_id}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Text | str]] = [
        ("graph", view.graph),
        ("run id", view.run_id),
        ("status", _status(view.status, view.error_kind)),
        (
            "children",
            f"{view.children_dispatched} dispatched, {view.children_finished} ended,"
            f" {view.children_failed} not completed",
        ),
        ("messages", str(view.message_count)),
        ("started (UTC)", view.started_at.isoformat(timespec="milliseconds")),
    ]
    if view.finished_at is not None:
        rows.append(("finished (UTC)", view.finished_at.isoformat(timespec="milliseconds")))
        rows.append(("duration", _ms(view.duration_ms)))
    if view.error_message:
        rows.append(("error", Text(view.error_message)))
    for field, value in rows:
        table.add_row(field, value)
    return table


@workflow_app.command()
@one_line_errors
def show(
    identifier: str = typer.Argument(..., help="The workflow's task id, or its graph run id."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: workflow, children, messages, mermaid."
    ),
) -> None:
    """One workflow: status, child tasks by step, and its messages as Mermaid.

    Read from the event store (right even while the projector lags): the status and
    timing, a tree of the child tasks by the step that dispatched them (agent, task id,
    status, duration, output or error), then the messages as a Mermaid sequence diagram.
    """
    events = _events(identifier)
    view = fold_workflow(events)
    assert view is not None  # it dispatched (checked by _events)
    messages = workflow_messages(events)
    diagram = sequence_diagram(messages, title=f"{view.task_id} ({view.graph})")
    if as_json:
        print_json(
            {
                "workflow": view.model_dump(mode="json", exclude={"children"}),
                "children": [c.model_dump(mode="json") for c in view.children],
                "messages": [m.model_dump(mode="json") for m in messages],
                "mermaid": diagram,
            }
        )
        return
    console.print(_header(view))
    console.print(_tree(view))
    console.print(Text("Messages (Mermaid sequence diagram):", style="bold"))
    sys.stdout.write(diagram)  # plain: the diagram is copied as it is


def _messages_table(title: str, messages: list[AgentMessage]) -> Table:
    table = Table(title=title)
    for column in ("at (UTC)", "kind", "sender -> receiver", "message id", "causation id"):
        table.add_column(column, overflow="fold")
    table.add_column("content", overflow="fold", max_width=_PREVIEW + 2)
    for message in messages:
        table.add_row(
            message.at.strftime("%H:%M:%S.%f")[:-3],
            message.kind.value,
            f"{message.sender} -> {message.receiver}",
            message.message_id,
            message.causation_id or "-",
            Text(_short(message.content)),
        )
    return table


@workflow_app.command()
@one_line_errors
def messages(
    correlation_id: str = typer.Argument(
        ..., help="The workflow's correlation id: its task id (or its graph run id)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print every message in full, as JSON."),
) -> None:
    """The messages of a workflow, in the order they were recorded.

    A request per child task dispatched, a response per child's outcome; read from the
    event store.
    """
    events = _events(correlation_id)
    found = workflow_messages(events)
    if as_json:
        print_json([m.model_dump(mode="json") for m in found])
        return
    title = f"Messages of workflow {events[0].task_id} ({len(found)})"
    console.print(_messages_table(title, found))


@workflow_app.command("list")
@one_line_errors
def list_(
    graph: str = typer.Option(None, help="Only workflows of this graph."),
    status: str = typer.Option(None, help="running | waiting | paused | completed | failed"),
    limit: int = typer.Option(50, min=1, max=1000, help="At most this many."),
    offset: int = typer.Option(0, min=0, help="Rows to skip first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List workflows from the workflows view, newest first."""
    settings = settings_from_env(announce_store=True)
    arguments = {"graph": graph, "status": status, "limit": limit, "offset": offset}
    rows = query_views(settings, "workflows", {k: v for k, v in arguments.items() if v is not None})
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Workflows ({len(rows)})")
    for column in ("task", "graph", "status", "children", "messages", "started (UTC)", "ms"):
        table.add_column(column, overflow="fold")
    for row in rows:
        duration = row["duration_ms"]
        table.add_row(
            row["task_id"],
            row["graph"],
            _status(row["status"], row["error_kind"]),
            f"{row['children_finished']}/{row['children_dispatched']} ended"
            + (f", {row['children_failed']} not completed" if row["children_failed"] else ""),
            str(row["message_count"]),
            row["started_at"][:19],
            "-" if duration is None else f"{duration:.0f}",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(workflow_app, name="workflow")
