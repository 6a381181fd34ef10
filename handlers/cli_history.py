"""The history commands of the CLI: replay, fork, export, import, archive, store-size.

`replay` exits 0 when every replayed run is identical, 2 when one diverged (1 is an
error, as for every command), so it can gate CI on recorded fixtures.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentledger.domain.conversation import Conversation
from agentledger.domain.graphs.run import GraphRun
from agentledger.domain.history_file import HistoryDocument, parse_history
from agentledger.domain.ids import run_id_for
from agentledger.domain.run import AgentRun
from agentledger.handlers.cli_support import (
    CliError,
    console,
    err_console,
    one_line_errors,
    print_json,
    resolve,
    run,
    settings_from_env,
)
from agentledger.infra.settings import Settings

__all__ = ["register"]

DIVERGED_EXIT = 2


def _progress(label: str, enabled: bool) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not enabled,
        transient=True,
    )


def _runs_in_view(settings: Settings, **filters: Any) -> Iterator[Any]:
    """Rows of the runs view matching `filters`, newest first, a page at a time (none
    when the views were never built)."""
    from agentledger.infra.view_store import view_store_for
    from agentledger.projections.runs import RunsProjection, list_runs

    views = view_store_for(settings)
    try:
        views.ensure(RunsProjection)
        offset = 0
        while True:
            with views.read() as cursor:
                rows = list_runs(cursor, limit=500, offset=offset, **filters)
            if not rows:
                return
            offset += len(rows)
            yield from rows
    finally:
        views.close()


def _session_run_ids(settings: Settings, session_id: str) -> list[UUID]:
    """The session's runs from the runs view (failed ones and forks record no turn)."""
    rows = [r for r in _runs_in_view(settings, session_id=session_id) if r.status != "rejected"]
    return [UUID(r.run_id) for r in reversed(rows)]


def _agent_run_ids(settings: Settings, store: Any, agent: str, limit: int) -> list[UUID]:
    """The agent's latest finished runs still in the store (archived ones are skipped),
    oldest first, from the runs view."""
    found: list[UUID] = []
    for row in _runs_in_view(settings, agent=agent):
        if len(found) >= limit:
            break
        run_id = UUID(row.run_id)
        if row.status in ("completed", "failed") and store.events(run_id, lte=1):
            found.append(run_id)
    return list(reversed(found))


def _archived_hint(settings: Settings, identifier: str) -> str | None:
    from agentledger.infra.archive_log import ArchiveLog
    from agentledger.infra.view_store import view_store_for

    views = view_store_for(settings)
    try:
        candidates = [identifier, str(run_id_for(identifier))]
        for candidate in candidates:
            where = ArchiveLog(views).where(candidate)
            if where:
                return where
        return None
    except Exception:
        return None
    finally:
        views.close()


def _load(settings: Settings, store: Any, identifier: str) -> tuple[str, list[UUID]]:
    """('run' | 'graph' | 'session', run ids) for a run id, task id or session id."""
    try:
        aggregate_id, events = resolve(store, identifier)
    except CliError:
        archived = _archived_hint(settings, identifier)
        if archived:
            raise CliError(
                f"{identifier} was archived to {archived}; use --file {archived}"
            ) from None
        raise
    if isinstance(events[0], AgentRun.RunRequested):
        return "run", [aggregate_id]
    if isinstance(events[0], GraphRun.GraphStarted):
        return "graph", [aggregate_id]
    if isinstance(events[0], Conversation.ConversationStarted):
        ids = [UUID(e.run_id) for e in events if isinstance(e, Conversation.TurnRecorded)]
        ids += [r for r in _session_run_ids(settings, identifier) if r not in ids]
        present = [r for r in ids if store.events(r, lte=1)]  # archived runs are gone
        if len(present) < len(ids):
            err_console.print(
                f"[yellow]{len(ids) - len(present)} run(s) of session {identifier} are archived"
                " (see `agentledger archive`); they are left out"
            )
        return "session", present
    raise CliError(f"{identifier} is a rejected task, not a run: nothing to replay")


def _read_document(path: Path) -> HistoryDocument:
    try:
        text = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {path}") from None
    return parse_history(text, str(path))


def replay(
    identifier: str = typer.Argument(
        None, help="Run id, task id (agent or graph run) or session id."
    ),
    file: Path = typer.Option(None, "--file", "-f", help="Replay an export instead (no store)."),
    agent: str = typer.Option(
        None, "--agent", help="Replay this agent's latest runs (see --limit) instead of one id."
    ),
    limit: int = typer.Option(100, help="With --agent: how many of its latest runs."),
    run_tools: bool = typer.Option(
        False, "--run-tools", help="Run the tools instead of serving recorded results."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Re-execute recorded runs with the current agent code, serving the recorded model
    responses and tool results; print `identical` or the first divergence.

    A graph run is re-executed with the catalog's graph: every step is served from the
    record (no step body runs, no model is called) while decisions, edges and joins run
    again, and its agent steps' runs are replayed as agent runs.

    `--agent NAME` replays that agent's latest runs: a check of new agent code against
    what it did in production before it is deployed."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.graphs.replay import (
        GraphReplayReport,
        RecordedGraphRun,
        recorded_graph_run,
        recorded_graph_runs,
        replay_graph_run,
    )
    from agentledger.handlers.render import divergence_text, replay_table
    from agentledger.handlers.replay import (
        RecordedRun,
        ReplayReport,
        recorded_run,
        recorded_runs,
        replay_recorded,
    )
    from agentledger.infra.event_store import EventStore

    if sum(x is not None for x in (identifier, file, agent)) != 1:
        raise CliError("give a run, task or session id, --file or --agent (one of them)")
    settings = settings_from_env(announce_store=True, log_level="WARNING")
    catalog = load_catalog(settings)
    recorded: list[RecordedRun | RecordedGraphRun]
    if file is not None:
        document = _read_document(file)
        graphs = recorded_graph_runs(document)
        steps = {r.run_id for g in graphs for r in g.agent_runs}  # replayed with their graph
        recorded = [*graphs, *(r for r in recorded_runs(document) if r.run_id not in steps)]
    else:
        store = EventStore(settings)
        try:
            if agent is not None:
                run_ids = _agent_run_ids(settings, store, agent, limit)
                kind = "run"
            else:
                kind, run_ids = _load(settings, store, identifier)
            if kind == "graph":
                recorded = [recorded_graph_run(store, run_ids[0])]
            else:
                recorded = [recorded_run(store, r) for r in run_ids]
        finally:
            store.close()
    if not recorded:
        raise CliError("nothing to replay: no runs found")

    async def go() -> list[ReplayReport | GraphReplayReport]:
        reports: list[ReplayReport | GraphReplayReport] = []
        with _progress("replaying", len(recorded) > 1 and not as_json) as progress:
            bar = progress.add_task("replay", total=len(recorded))
            for r in recorded:
                if isinstance(r, RecordedGraphRun):
                    reports.append(await replay_graph_run(r, catalog))
                else:
                    reports.append(await replay_recorded(r, catalog, run_tools=run_tools))
                progress.advance(bar)
        return reports

    reports = run(go())
    if as_json:
        print_json([r.as_dict() for r in reports])
    elif len(reports) == 1 and isinstance(reports[0], ReplayReport):
        report = reports[0]
        if report.divergence is None:
            console.print("identical" + (f"  ({report.note})" if report.note else ""))
        else:
            console.print(divergence_text(report.divergence))
    else:
        agent_reports = [r for r in reports if isinstance(r, ReplayReport)]
        if agent_reports:
            console.print(replay_table(agent_reports))
            for report in agent_reports:
                if report.divergence is not None:
                    console.print(f"[bold]{report.task_id}[/bold]")
                    console.print(divergence_text(report.divergence))
        for graph_report in (r for r in reports if isinstance(r, GraphReplayReport)):
            _print_graph_replay(graph_report)
    if not all(r.identical for r in reports):
        raise typer.Exit(DIVERGED_EXIT)


def _print_graph_replay(report: Any) -> None:
    """A graph replay: its verdict (or divergence), then its agent steps' replays."""
    from agentledger.handlers.render import divergence_text, replay_table

    console.print(
        f"[bold]graph run {report.task_id}[/bold] ({report.graph}):"
        f" {report.served_steps} of {report.recorded_steps} recorded steps served"
    )
    if report.divergence is not None:
        console.print(f"[bold red]{report.divergence.summary()}")
    else:
        verdict = "identical" if report.identical else "diverged in an agent step"
        console.print(verdict + (f"  ({report.note})" if report.note else ""))
    if report.agent_steps:
        console.print(replay_table(report.agent_steps, title="Agent steps"))
        for step in report.agent_steps:
            if step.divergence is not None:
                console.print(f"[bold]{step.task_id}[/bold]")
                console.print(divergence_text(step.divergence))


def export(
    identifier: str = typer.Argument(
        ..., help="Run id, task id (agent or graph run) or session id."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="File to write ('-' for stdout); default <id>.history.json."
    ),
) -> None:
    """Write a run (with the session history it saw), a graph run (with its agent steps'
    runs) or a whole session as versioned JSON."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.export import export_graph_run, export_run, export_session
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env(announce_store=True)
    catalog = load_catalog(settings)
    store = EventStore(settings)
    try:
        kind, run_ids = _load(settings, store, identifier)
        if kind == "run":
            document = export_run(store, run_ids[0], catalog)
        elif kind == "graph":
            document = export_graph_run(store, run_ids[0], catalog)
        else:
            document = export_session(store, identifier, catalog, run_ids)
    finally:
        store.close()
    text = document.to_json()
    if str(out) == "-":
        sys.stdout.write(text)
        return
    path = out or Path(f"{identifier}.history.json")
    path.write_text(text, encoding="utf-8")
    events = sum(len(a.events) for a in document.aggregates)
    console.print(f"wrote {events} events of {len(document.aggregates)} aggregates to {path}")


def import_(
    files: list[Path] = typer.Argument(..., help="History files (exports or archives)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Load exported histories into the configured store (idempotent, atomic per file)."""
    from agentledger.handlers.export import import_history
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env(announce_store=True)
    store = EventStore(settings)
    results = []
    try:
        for path in files:
            report = import_history(store, _read_document(path))
            results.append({"file": str(path), **vars(report)})
    finally:
        store.close()
    if as_json:
        print_json(results)
        return
    for r in results:
        console.print(
            f"{r['file']}: {r['imported_events']} events imported, {r['skipped_events']}"
            f" already present ({r['aggregates']} aggregates)"
        )


def fork(
    identifier: str = typer.Argument(
        ..., help="Run id or task id of the parent (agent or graph) run."
    ),
    at: int = typer.Option(
        ...,
        "--at",
        help="Event index (the `v` of `agentledger events`); for a graph run, a checkpoint"
        " (1 or a StepFinished event).",
    ),
    prompt: str = typer.Option(
        None, "--prompt", "-p", help="Agent runs: a prompt to continue with."
    ),
    state: str = typer.Option(
        None, "--state", help="Graph runs: the state to continue from (JSON)."
    ),
    inputs: str = typer.Option(None, "--input", help="Graph runs at --at 1: another input (JSON)."),
    task_id: str = typer.Option(None, help="The fork's task id (default: <parent>-fork-<hex>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Start a new run from a recorded run's state at an event and continue it live.

    A graph run forks at a checkpoint: the steps finished by then are served from the
    parent's record, the rest of the graph runs live (optionally from another --state,
    or at --at 1 with another --input). The fork is a new linked run of its own."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.fork import fork_run
    from agentledger.handlers.render import outcomes_table
    from agentledger.handlers.runner import AgentRunner
    from agentledger.infra.event_store import AsyncEventStore, EventStore

    settings = settings_from_env(announce_store=True, log_level="WARNING")
    catalog = load_catalog(settings)
    store = AsyncEventStore(EventStore(settings), settings.store_threads, settings.store_retry_s)
    try:
        kind, run_ids = _load(settings, store.sync, identifier)
        if kind == "session":
            raise CliError(f"{identifier} is a session; fork one of its runs")
        runner = AgentRunner(store=store, catalog=catalog)
        if kind == "graph":
            if prompt is not None:
                raise CliError("--prompt is for agent runs; a graph fork takes --state or --input")
            _fork_graph(
                store, catalog, runner, run_ids[0], identifier, at, state, inputs, task_id, as_json
            )
            return
        if state is not None or inputs is not None:
            raise CliError("--state and --input are for graph runs; an agent fork takes --prompt")
        result = run(fork_run(store, runner, run_ids[0], at=at, prompt=prompt, task_id=task_id))
    finally:
        store.close()
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "task_id": result.task_id,
                "parent_run_id": result.parent_run_id,
                "at": result.at,
                "outcome": result.outcome.model_dump(mode="json"),
            }
        )
    else:
        console.print(
            f"forked {identifier} at event {result.at} as task {result.task_id}"
            f" (run {result.run_id})"
        )
        console.print(outcomes_table([result.outcome], title="Fork outcome"))
        console.print(f"[dim]Try: agentledger events {result.task_id}")
    if result.outcome.status != "completed":
        raise typer.Exit(2)


def _fork_graph(
    store: Any,
    catalog: Any,
    agents: Any,
    parent: UUID,
    identifier: str,
    at: int,
    state: str | None,
    inputs: str | None,
    task_id: str | None,
    as_json: bool,
) -> None:
    from agentledger.handlers.graphs.cli import json_argument, show_outcome
    from agentledger.handlers.graphs.fork import UNCHANGED, fork_graph_run
    from agentledger.handlers.graphs.runner import GraphRunner

    runner = GraphRunner(store=store, catalog=catalog, agents=agents)
    result = run(
        fork_graph_run(
            store,
            runner,
            parent,
            at=at,
            state=UNCHANGED if state is None else json_argument(state, "--state"),
            inputs=UNCHANGED if inputs is None else json_argument(inputs, "--input"),
            task_id=task_id,
        )
    )
    outcome = result.outcome.model_dump(mode="json")
    if as_json:
        outcome = {"parent_run_id": result.parent_run_id, "at": result.at, **outcome}
    else:
        console.print(
            f"forked graph run {identifier} at event {result.at} as task {result.task_id}"
            f" (run {result.run_id})"
        )
    show_outcome(outcome, as_json)


def archive(
    older_than_days: float = typer.Option(
        None,
        "--older-than-days",
        help="Archive runs that finished more than this many days ago"
        " (default: AGENTLEDGER_RETENTION_DAYS).",
    ),
    out: Path = typer.Option(
        None, "--out", help="Directory for archive files (default: AGENTLEDGER_ARCHIVE_DIR)."
    ),
    batch: int = typer.Option(500, help="Runs per archive file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be archived."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Archive finished runs to files, verify them, then remove them from the hot store."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.retention import archive_runs
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.view_store import view_store_for

    settings = settings_from_env(announce_store=True)
    days = older_than_days if older_than_days is not None else settings.retention_days
    if days is None:
        raise CliError("give --older-than-days or set AGENTLEDGER_RETENTION_DAYS")
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        with _progress("archiving", not as_json) as progress:
            bar = progress.add_task("archive", total=None)
            report = archive_runs(
                store,
                views,
                out or settings.archive_path,
                older_than_days=days,
                batch=batch,
                dry_run=dry_run,
                catalog=load_catalog(settings),
                progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
    finally:
        views.close()
        store.close()
    if as_json:
        print_json(vars(report))
        return
    if dry_run:
        console.print(f"{report.candidates} finished runs older than {days:g} days")
        return
    console.print(
        f"archived {report.archived_runs} runs ({report.removed_events} events) to"
        f" {len(report.files)} file(s); {len(report.kept)} kept for a later pass"
    )
    for path in report.files:
        console.print(f"  {path}")


def store_size(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Report the event store's size by aggregate type."""
    from agentledger.handlers.render import size_table
    from agentledger.handlers.retention import store_report
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env(announce_store=True)
    store = EventStore(settings)
    try:
        sizes = store_report(store)
    finally:
        store.close()
    if as_json:
        print_json([vars(s) for s in sizes])
    else:
        console.print(size_table(sizes, title=f"Event store size ({settings.backend})"))


def register(app: typer.Typer) -> None:
    """Add the history commands to the CLI."""
    for command, name in (
        (replay, "replay"),
        (fork, "fork"),
        (export, "export"),
        (import_, "import"),
        (archive, "archive"),
        (store_size, "store-size"),
    ):
        app.command(name=name)(one_line_errors(command))
