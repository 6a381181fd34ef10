"""`agentledger eval run|show|list|datasets|compare|history|replay`.

- `run` publishes a `RunEvaluation` and follows it with a progress bar, then prints the
  report and writes the HTML. With no `AGENTLEDGER_NATS_URL` it runs the whole system
  in-process (embedded nats-server, a worker and a projector), as `demo` does; with one,
  the deployment's workers run the cases.
- `show` and `compare` read the evaluations' events from the event store (exact however
  far the projector lags, as `workflow show` does); `list` reads the evaluations view.
- `history` scores recorded runs of an agent with a dataset's evaluators, from their
  events: no agent runs, no model calls (a `Judge` needs `--judge`: it calls its model).
- `replay` re-runs an evaluation's recorded cases against the current code through
  replay (recorded model responses and tool results served: no model calls), scores the
  replayed outputs and says what changed: for regression checks in CI (exit 1).

Exit codes: 0 fine; 1 the evaluation missed its thresholds (`run`), a regression or a
divergence (`compare --check`, `replay`); 2 bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agentledger.domain.evaluation.evaluation import Evaluation, evaluation_id_for
from agentledger.domain.evaluation.scores import CaseChange, CaseResult, compare, summarise
from agentledger.domain.evaluation.tasks import EvaluationOutcome, EvaluationProgress, RunEvaluation
from agentledger.domain.ids import run_id_for
from agentledger.domain.subjects import (
    eval_subject,
    eval_workers_consumer,
    evaluation_progress_subject,
    results_subject,
)
from agentledger.handlers.cli_support import (
    CliError,
    console,
    notify,
    one_line_errors,
    print_json,
    query_views,
    settings_from_env,
)
from agentledger.handlers.evaluation.report_html import ReportData, render_report
from agentledger.infra.settings import Settings

__all__ = ["register"]

eval_app = typer.Typer(
    help="Evaluation: run a catalog dataset's cases as recorded agent runs and score them;"
    " compare two evaluations; score recorded runs offline; replay an evaluation.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_CHANGE_STYLES = {
    "regression": "red",
    "improvement": "green",
    "unchanged": "dim",
    "new": "cyan",
    "gone": "yellow",
}


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


# -- reading evaluations ---------------------------------------------------------------


def _load_evaluation(settings: Settings, identifier: str) -> Evaluation:
    """The evaluation `identifier` names: its task id, or its id."""
    from agentledger.infra.event_store import EventStore

    candidates = [evaluation_id_for(identifier)]
    with contextlib.suppress(ValueError):
        candidates.insert(0, UUID(identifier))
    store = EventStore(settings)
    try:
        for candidate in candidates:
            found = store.get(candidate, Evaluation)
            if found is not None:
                return found
    finally:
        store.close()
    raise CliError(f"no evaluation {identifier!r} (tried it as an evaluation's task id and id)")


def _report_data(evaluation: Evaluation, notes: Sequence[str] = ()) -> ReportData:
    results = evaluation.case_results()
    return ReportData(
        task_id=evaluation.task_id,
        dataset=evaluation.dataset,
        label=evaluation.label,
        agents=dict(evaluation.agents),
        started_at=evaluation.created_on.astimezone(UTC).isoformat(timespec="seconds"),
        duration_ms=evaluation.duration_ms,
        status="finished" if evaluation.finished else "running",
        thresholds=dict(evaluation.thresholds),
        breaches=list(evaluation.breaches),
        thresholds_met=evaluation.passed,
        summary=evaluation.summary(),
        results=results,
        notes=list(notes),
    )


def _report_json(data: ReportData) -> dict[str, Any]:
    return {
        "task_id": data.task_id,
        "dataset": data.dataset,
        "label": data.label,
        "agents": data.agents,
        "status": data.status,
        "started_at": data.started_at,
        "duration_ms": data.duration_ms,
        "thresholds": data.thresholds,
        "breaches": data.breaches,
        "thresholds_met": data.thresholds_met,
        "summary": data.summary.model_dump(mode="json"),
        "cases": [
            {**r.model_dump(mode="json"), "passed": r.passed, "errored": r.errored}
            for r in data.results
        ],
    }


def _short(value: Any, limit: int = 48) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cases_table(results: Sequence[CaseResult], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("", "case", "agent", "output", "evaluators", "latency", "cost"):
        table.add_column(column, overflow="fold")
    for r in results:
        mark = (
            Text("pass", style="green")
            if r.passed
            else Text("error" if r.errored else "fail", style="red")
        )
        checks = Text()
        for name, ok in r.assertions.items():
            checks.append(f"{name} ", style="green" if ok else "red")
        for name, value in r.scores.items():
            checks.append(f"{name}={value:.2f} ", style="cyan")
        for name in r.evaluator_failures:
            checks.append(f"{name}:failed ", style="yellow")
        table.add_row(
            mark,
            Text(r.case),
            Text(r.agent),
            Text(_short(r.output if r.status == "completed" else (r.error or r.status))),
            checks,
            "-" if r.duration_ms is None else f"{r.duration_ms:.0f} ms",
            "-" if r.cost_usd is None else f"${r.cost_usd:.6f}",
        )
    return table


def _print_summary(data: ReportData) -> None:
    s = data.summary
    line = Text()
    line.append(f"{s.passed}/{s.cases} passed ({s.pass_rate:.1%})", style="bold")
    line.append(f", {s.failed} failed, {s.errored} errored")
    if s.assertion_rate is not None:
        line.append(f"; assertions {s.assertion_rate:.1%}")
    for name, value in s.scores.items():
        line.append(f"; mean {name} {value:.3f}")
    if s.latency_p50_ms is not None:
        line.append(f"; latency p50 {s.latency_p50_ms:.0f} ms, p95 {s.latency_p95_ms:.0f} ms")
    line.append(f"; cost ${s.cost_usd:.6f}")
    console.print(line)
    if data.status == "finished":
        if data.thresholds_met:
            console.print(Text("thresholds met", style="green"))
        else:
            console.print(Text("thresholds NOT met: " + "; ".join(data.breaches), style="red"))


def _write_html(data: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path


def _default_html(settings: Settings, task_id: str) -> Path:
    return settings.data_dir / "reports" / f"{task_id}.html"


def _show(data: ReportData, settings: Settings, as_json: bool, html: Path | None) -> None:
    written = _write_html(data, html or _default_html(settings, data.task_id))
    if as_json:
        print_json({**_report_json(data), "html": str(written)})
        return
    console.print(_cases_table(data.results, f"Evaluation {data.task_id} of {data.dataset}"))
    _print_summary(data)
    console.print(f"[dim]HTML report: {written}")


# -- run -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _system(settings: Settings) -> AsyncIterator[Settings]:
    """The settings to publish with: as they are with a NATS URL; else an embedded
    nats-server, a worker and a projector run here while the evaluation does."""
    if settings.nats_url is not None:
        yield settings
        return
    from agentledger.handlers.bootstrap import ProjectorService, WorkerService
    from agentledger.infra.nats_server import start_beside

    server = await asyncio.to_thread(start_beside, settings.data_dir, "nats-eval")
    local = settings.model_copy(update={"nats_url": server.url})
    notify(
        f"no AGENTLEDGER_NATS_URL: running nats-server {server.url}, a worker and a"
        f" projector here (store: {settings.backend})"
    )
    worker = WorkerService(settings=local, name="agentledger-eval-worker")
    projector = ProjectorService(settings=local)
    try:
        await worker.start()
        await projector.start()
        yield local
        assert projector.store is not None
        last = await asyncio.to_thread(projector.store.max_notification_id)
        await asyncio.to_thread(projector.wait_until, last, 15.0)
    finally:
        await worker.stop(grace_s=5)
        await projector.stop()
        await asyncio.to_thread(server.stop)


async def _publish_and_follow(
    settings: Settings, task: RunEvaluation, timeout: float, quiet: bool
) -> EvaluationOutcome:
    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.handlers.client import LedgerClient
    from agentledger.infra.nats import ensure_streams

    nc = await connect_nats(settings, "agentledger-eval")
    prefix = settings.subject_prefix
    client = LedgerClient(nc, prefix=prefix)
    try:
        # As `publish` does: the streams exist before any worker has started.
        await ensure_streams(nc.jetstream(), settings)
        outcomes = await nc.subscribe(results_subject(prefix, task.task_id), max_msgs=1)
        progress_sub = await nc.subscribe(evaluation_progress_subject(prefix, task.task_id))
        ack = await nc.jetstream().publish(
            eval_subject(prefix, task.dataset),
            task.model_dump_json(exclude_none=True).encode(),
            headers={"Nats-Msg-Id": task.task_id},
        )
        if ack.duplicate:
            notify(f"{task.task_id} was published before: following it")
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[passed]} passed"),
            TimeElapsedColumn(),
        )
        deadline = time.monotonic() + timeout
        notice_at: float | None = time.monotonic() + 3.0
        with Progress(*columns, console=console, transient=False, disable=quiet) as bar:
            bar_id = bar.add_task(f"evaluating {task.dataset}", total=None, passed=0)
            stored = await client.outcome(task.task_id, EvaluationOutcome)
            if stored is not None:
                return stored
            while True:
                if notice_at is not None and time.monotonic() > notice_at:
                    notice_at = None
                    listening, _ = await client.workers_listening(eval_workers_consumer(prefix))
                    if not listening:
                        notify(
                            "no worker is taking evaluation tasks yet (is `agentledger worker`"
                            f" running for prefix {prefix!r}?); waiting"
                        )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CliError(
                        f"no outcome for {task.task_id} within {timeout:g} s: is a worker"
                        " running (`agentledger worker`)? It goes on; `agentledger eval show"
                        f" {task.task_id}` shows it later"
                    )
                with contextlib.suppress(TimeoutError):
                    msg = await asyncio.wait_for(outcomes.next_msg(timeout=None), min(left, 0.2))
                    return EvaluationOutcome.model_validate_json(msg.data)
                while True:
                    try:
                        update = await progress_sub.next_msg(timeout=0.001)
                    except Exception:
                        break
                    with contextlib.suppress(ValueError):
                        p = EvaluationProgress.model_validate_json(update.data)
                        bar.update(bar_id, total=p.total, completed=p.done, passed=p.passed)
                        notice_at = None
    finally:
        await nc.close()


async def _run(
    settings: Settings, task: RunEvaluation, timeout: float, quiet: bool
) -> tuple[EvaluationOutcome, Settings]:
    async with _system(settings) as live:
        outcome = await _publish_and_follow(live, task, timeout, quiet)
    return outcome, live


def _agents_option(values: list[str]) -> dict[str, str]:
    agents: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep:
            old, new = "*", value
        if not old or not new:
            raise CliError(f"invalid --agent {value!r}: use NEW (every case) or CASE_AGENT=NEW")
        agents[old] = new
    return agents


@eval_app.command("run")
@one_line_errors
def run_command(
    dataset: str = typer.Argument(
        ..., help="A dataset of the catalog (`agentledger eval datasets`)."
    ),
    agent: list[str] = typer.Option(
        [],
        "--agent",
        help="Run the cases on another agent: NEW for every case, or OLD=NEW for the cases"
        " of OLD (e.g. calculator=calculator_v2). Repeatable.",
    ),
    label: str | None = typer.Option(
        None, help="A name for this evaluation (a version, a commit)."
    ),
    concurrency: int | None = typer.Option(
        None,
        min=1,
        max=256,
        help="Cases in flight at once (default: the dataset's, else the setting).",
    ),
    case: list[str] = typer.Option([], "--case", help="Only this case (repeatable)."),
    task_id: str | None = typer.Option(None, help="The evaluation's task id (default: a new one)."),
    html: Path | None = typer.Option(
        None, help="Where to write the HTML report (default: <data dir>/reports/<task id>.html)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    timeout: float = typer.Option(3600.0, help="Seconds to wait for the evaluation to end."),
) -> None:
    """Run every case of DATASET as a recorded agent run, score it, print the report and
    write the HTML. Exit 1 when the evaluation misses its thresholds."""
    settings = settings_from_env(announce_store=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        task = RunEvaluation(
            task_id=task_id or f"eval-{dataset[:80]}-{stamp}-{uuid.uuid4().hex[:6]}",
            dataset=dataset,
            agents=_agents_option(agent),
            label=label,
            concurrency=concurrency,
            cases=case or None,
        )
    except ValueError as e:
        raise CliError(f"invalid evaluation: {str(e).splitlines()[-1].strip()}") from None
    outcome, _ = asyncio.run(_run(settings, task, timeout, quiet=as_json))
    if outcome.status != "completed":
        error = outcome.error
        why = f"{error.kind}: {error.message}" if error else outcome.status
        raise CliError(f"evaluation {task.task_id} {outcome.status}: {why}")
    data = _report_data(_load_evaluation(settings, task.task_id))
    _show(data, settings, as_json, html)
    if not outcome.thresholds_met:
        raise typer.Exit(1)


# -- show, list, datasets ----------------------------------------------------------------


@eval_app.command("show")
@one_line_errors
def show_command(
    evaluation: str = typer.Argument(..., help="The evaluation's task id (or id)."),
    html: Path | None = typer.Option(None, help="Where to write the HTML report."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Print an evaluation's report (finished or still running) and write its HTML."""
    settings = settings_from_env(announce_store=True)
    _show(_report_data(_load_evaluation(settings, evaluation)), settings, as_json, html)


@eval_app.command("list")
@one_line_errors
def list_command(
    dataset: str | None = typer.Option(None, help="Only this dataset's evaluations."),
    limit: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    via_nats: bool = typer.Option(False, "--nats", help="Ask a projector over NATS."),
) -> None:
    """The latest evaluations, newest first (the evaluations view)."""
    settings = settings_from_env(announce_store=True)
    rows = query_views(
        settings, "evaluations", {"dataset": dataset, "limit": limit}, via_nats=via_nats
    )
    if as_json:
        print_json(rows)
        return
    table = Table(title="Evaluations", title_justify="left")
    for column in (
        "task id",
        "dataset",
        "label",
        "status",
        "passed",
        "pass rate",
        "thresholds",
        "started",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        met = row["thresholds_met"]
        table.add_row(
            Text(row["task_id"]),
            Text(row["dataset"]),
            Text(row["label"] or ""),
            row["status"],
            f"{row['passed']}/{row['cases']}",
            f"{row['pass_rate']:.1%}",
            Text(
                "-" if met is None else ("met" if met else "missed"),
                style="green" if met else "red",
            ),
            str(row["started_at"])[:19],
        )
    console.print(table)


@eval_app.command("datasets")
@one_line_errors
def datasets_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The catalog's datasets, with their agent, case count and thresholds."""
    from agentledger.handlers.evaluation.datasets import (
        DatasetInvalid,
        catalog_datasets,
        load_dataset,
    )

    settings = settings_from_env()
    rows = []
    for name, entry in sorted(catalog_datasets(Path(settings.catalog)).items()):
        try:
            loaded = load_dataset(entry)
            cases: int | str = len(loaded.cases)
        except DatasetInvalid as e:
            cases = f"invalid: {e}"
        rows.append(
            {
                "name": name,
                "agent": entry.agent,
                "cases": cases,
                "path": str(entry.path),
                "thresholds": entry.thresholds.model_dump(exclude_defaults=True),
                "description": entry.description,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="Datasets", title_justify="left")
    for column in ("dataset", "agent", "cases", "thresholds", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            Text(str(row["name"])),
            Text(str(row["agent"] or "-")),
            str(row["cases"]),
            str(row["thresholds"]),
            Text(str(row["description"])),
        )
    console.print(table)


# -- compare -----------------------------------------------------------------------------


def _changes_table(changes: Sequence[CaseChange], a: str, b: str) -> Table:
    table = Table(title=f"{a} -> {b}", title_justify="left")
    for column in ("change", "case", "A", "B", "what moved"):
        table.add_column(column, overflow="fold")

    def mark(value: bool | None) -> str:
        return "-" if value is None else ("pass" if value else "fail")

    for change in changes:
        table.add_row(
            Text(change.change, style=_CHANGE_STYLES[change.change]),
            Text(change.case),
            mark(change.a_passed),
            mark(change.b_passed),
            Text("; ".join(change.details)),
        )
    return table


@eval_app.command("compare")
@one_line_errors
def compare_command(
    a: str = typer.Argument(..., help="The earlier evaluation (task id or id)."),
    b: str = typer.Argument(..., help="The later evaluation (task id or id)."),
    tolerance: float = typer.Option(0.05, min=0, help="Score change ignored as noise."),
    show_all: bool = typer.Option(False, "--all", help="List unchanged cases too."),
    check: bool = typer.Option(False, "--check", help="Exit 1 when any case regressed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Case by case: the regressions and improvements from evaluation A to B."""
    settings = settings_from_env(announce_store=True)
    first, second = _load_evaluation(settings, a), _load_evaluation(settings, b)
    changes = compare(first.case_results(), second.case_results(), tolerance=tolerance)
    counts = {kind: sum(c.change == kind for c in changes) for kind in _CHANGE_STYLES}
    sa, sb = first.summary(), second.summary()
    if as_json:
        print_json(
            {
                "a": {
                    "task_id": first.task_id,
                    "label": first.label,
                    "summary": sa.model_dump(mode="json"),
                },
                "b": {
                    "task_id": second.task_id,
                    "label": second.label,
                    "summary": sb.model_dump(mode="json"),
                },
                "counts": counts,
                "changes": [c.model_dump(mode="json") for c in changes],
            }
        )
    else:
        if first.dataset != second.dataset:
            console.print(
                f"[yellow]different datasets: {first.dataset} and {second.dataset} (compared by case name)"
            )
        shown = changes if show_all else [c for c in changes if c.change != "unchanged"]
        console.print(_changes_table(shown, first.task_id, second.task_id))
        console.print(
            f"{counts['regression']} regression(s), {counts['improvement']} improvement(s),"
            f" {counts['unchanged']} unchanged, {counts['new']} new, {counts['gone']} gone;"
            f" pass rate {sa.pass_rate:.1%} -> {sb.pass_rate:.1%}"
        )
    if check and counts["regression"]:
        raise typer.Exit(1)


# -- history -----------------------------------------------------------------------------


def _since(value: str) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"invalid --since {value!r}: use 30m, 2h, 7d or an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dataset_for(settings: Settings, name: str | None, agent: str) -> Any:
    from agentledger.handlers.evaluation.datasets import (
        DatasetInvalid,
        catalog_datasets,
        load_dataset,
    )

    entries = catalog_datasets(Path(settings.catalog))
    if name is None:
        name = next((n for n, e in sorted(entries.items()) if e.agent == agent), None)
        if name is None:
            raise CliError(
                f"no dataset of the catalog is for agent {agent!r}: name one with --dataset"
            )
    entry = entries.get(name)
    if entry is None:
        raise CliError(
            f"no dataset {name!r} in the catalog (datasets: {', '.join(sorted(entries)) or 'none'})"
        )
    try:
        return load_dataset(entry)
    except DatasetInvalid as e:
        raise CliError(str(e)) from None


def _without_judges(evaluators: Sequence[Any], keep: bool) -> list[Any]:
    from pydantic_evals.evaluators import LLMJudge

    return [e for e in evaluators if keep or not isinstance(e, LLMJudge)]


@eval_app.command("history")
@one_line_errors
def history_command(
    agent: str = typer.Option(..., help="Score this agent's recorded runs."),
    since: str = typer.Option("24h", help="Runs requested since: 30m, 2h, 7d, or an ISO time."),
    dataset: str | None = typer.Option(
        None, help="Whose evaluators and expected outputs (default: the agent's dataset)."
    ),
    limit: int = typer.Option(500, min=1, max=100_000, help="At most this many runs."),
    judge: bool = typer.Option(
        False, help="Also run LLM judges (they call the judge's model; without: skipped)."
    ),
    html: Path | None = typer.Option(None, help="Also write an HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score recorded runs of AGENT with a dataset's evaluators, from their events: no
    agent is run and no agent model is called. A run whose prompt is a case's gets that
    case's expected output and evaluators; the others get the dataset-wide ones."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.evaluation.evaluators import judge_models
    from agentledger.handlers.evaluation.scoring import run_facts, score_run
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env(announce_store=True)
    loaded = _dataset_for(settings, dataset, agent)
    start = _since(since)
    by_prompt = {c.prompt: c for c in loaded.cases}
    runs: list[dict[str, Any]] = []
    offset = 0
    while len(runs) < limit:
        page = query_views(settings, "runs", {"agent": agent, "limit": 200, "offset": offset})
        if not page:
            break
        offset += len(page)
        fresh = [r for r in page if datetime.fromisoformat(str(r["requested_at"])) >= start]
        runs += [r for r in fresh if r["status"] in ("completed", "failed")]
        if len(fresh) < len(page):
            break
    runs = runs[:limit]
    models: dict[str, Any] = {}
    if judge:
        catalog = load_catalog(settings)
        models = {n: e.model or e.agent.model for n, e in catalog.entries.items()}
    store = EventStore(settings)

    async def score_all() -> list[CaseResult]:
        out = []
        with judge_models(models):
            for row in reversed(runs):
                events = await asyncio.to_thread(store.events, UUID(row["run_id"]))
                if not events:
                    continue
                facts = run_facts(events)
                case = by_prompt.get(facts.prompt)
                evaluators = _without_judges(
                    loaded.evaluators_for(case.name) if case else loaded.evaluators, judge
                )
                out.append(
                    await score_run(
                        case=f"{case.name}@{facts.task_id}" if case else facts.task_id,
                        facts=facts,
                        evaluators=evaluators,
                        expected_output=case.expected_output if case else None,
                        metadata=case.metadata if case else None,
                    )
                )
        return out

    try:
        results = asyncio.run(score_all())
    finally:
        store.close()
    summary = summarise(results)
    data = ReportData(
        task_id=f"history-{agent}",
        dataset=loaded.entry.name,
        label=f"recorded runs of {agent} since {start.isoformat(timespec='seconds')}",
        agents={},
        started_at=start.isoformat(timespec="seconds"),
        duration_ms=None,
        status="history",
        thresholds=loaded.entry.thresholds.model_dump(mode="json"),
        breaches=loaded.entry.thresholds.breaches(summary),
        thresholds_met=None,
        summary=summary,
        results=results,
        title="agentledger offline evaluation",
        notes=[f"{len(results)} recorded run(s) scored; 0 agent runs; 0 agent model calls"],
    )
    if html is not None:
        _write_html(data, html)
    if as_json:
        print_json({**_report_json(data), "agent_model_calls": 0, "runs_scored": len(results)})
        return
    console.print(
        _cases_table(results, f"Recorded runs of {agent} since {start:%Y-%m-%d %H:%M} UTC")
    )
    _print_summary(data)
    console.print(
        f"[dim]{len(results)} recorded run(s) scored from their events: 0 agent runs, 0 agent"
        f" model calls{'' if judge else ' (LLM judges skipped: --judge runs them)'}"
    )
    if html is not None:
        console.print(f"[dim]HTML report: {html}")


# -- replay ------------------------------------------------------------------------------


@eval_app.command("replay")
@one_line_errors
def replay_command(
    dataset: str = typer.Argument(..., help="Replay this dataset's latest finished evaluation."),
    evaluation: str | None = typer.Option(None, help="Replay this evaluation instead (task id)."),
    judge: bool = typer.Option(False, help="Also run LLM judges on the replayed outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-run an evaluation's recorded cases against the current agent code through
    replay (recorded model responses and tool results are served: no model calls),
    score the replayed outputs, and exit 1 when a case diverged or regressed."""
    from agentledger.handlers.bootstrap import load_catalog
    from agentledger.handlers.evaluation.evaluators import judge_models
    from agentledger.handlers.evaluation.scoring import run_facts, score_run
    from agentledger.handlers.replay import recorded_run, replay_recorded
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env(announce_store=True)
    if evaluation is None:
        rows = query_views(
            settings, "evaluations", {"dataset": dataset, "status": "finished", "limit": 1}
        )
        if not rows:
            raise CliError(f"no finished evaluation of {dataset!r} in the evaluations view")
        evaluation = str(rows[0]["task_id"])
    recorded_eval = _load_evaluation(settings, evaluation)
    catalog = load_catalog(settings)
    loaded = _dataset_for(settings, recorded_eval.dataset, "")
    models = {n: e.model or e.agent.model for n, e in catalog.entries.items()} if judge else {}
    store = EventStore(settings)

    async def replay_all() -> list[dict[str, Any]]:
        rows = []
        with judge_models(models):
            for before in recorded_eval.case_results():
                row: dict[str, Any] = {"case": before.case, "before": before.passed}
                if before.status != "completed" or before.run_id is None:
                    rows.append(
                        {
                            **row,
                            "verdict": "not replayed",
                            "after": None,
                            "details": [before.status],
                        }
                    )
                    continue
                recorded = await asyncio.to_thread(recorded_run, store, run_id_for(before.task_id))
                report = await replay_recorded(recorded, catalog)
                facts = run_facts(report.replayed) if report.replayed else None
                after = None
                if facts is not None:
                    facts = facts.__class__(
                        **{
                            **facts.__dict__,
                            "duration_ms": before.duration_ms,
                            "cost_usd": before.cost_usd,
                        }
                    )
                    after = await score_run(
                        case=before.case,
                        facts=facts,
                        evaluators=_without_judges(loaded.evaluators_for(before.case), judge),
                        expected_output=before.expected_output,
                        agent=before.agent,
                    )
                details = []
                if report.divergence is not None:
                    details.append(report.divergence.summary())
                if after is not None and before.passed and not after.passed:
                    details += [
                        f"{n}: true -> false" for n, ok in after.assertions.items() if not ok
                    ]
                rows.append(
                    {
                        **row,
                        "verdict": report.verdict,
                        "after": None if after is None else after.passed,
                        "details": details,
                    }
                )
        return rows

    try:
        rows = asyncio.run(replay_all())
    finally:
        store.close()
    diverged = [r for r in rows if r["verdict"] == "diverged"]
    regressed = [r for r in rows if r["before"] and r["after"] is False]
    if as_json:
        print_json(
            {
                "evaluation": recorded_eval.task_id,
                "cases": rows,
                "diverged": len(diverged),
                "regressed": len(regressed),
                "model_calls": 0,
            }
        )
    else:
        table = Table(
            title=f"Replay of {recorded_eval.task_id} ({recorded_eval.dataset})",
            title_justify="left",
        )
        for column in ("case", "replay", "recorded", "replayed", "what changed"):
            table.add_column(column, overflow="fold")
        for r in rows:
            style = (
                "green"
                if r["verdict"] == "identical"
                else ("red" if r["verdict"] == "diverged" else "dim")
            )
            table.add_row(
                Text(r["case"]),
                Text(r["verdict"], style=style),
                "pass" if r["before"] else "fail",
                "-" if r["after"] is None else ("pass" if r["after"] else "fail"),
                Text("; ".join(r["details"])),
            )
        console.print(table)
        console.print(
            f"{len(rows)} case(s) replayed with no model calls: {len(diverged)} diverged,"
            f" {len(regressed)} regressed"
        )
    if diverged or regressed:
        sys.exit(1)
