"""`agentledger route test|publish|fit|feedback|show`: the semantic router."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentledger.handlers.cli_support import (
    CliError,
    console,
    err_console,
    one_line_errors,
    print_json,
    run,
    settings_from_env,
)

if TYPE_CHECKING:
    from agentledger.handlers.catalog import Catalog
    from agentledger.infra.settings import Settings

__all__ = ["register"]

route_app = typer.Typer(
    help="Semantic routing: score a text against the catalog's routes, publish route"
    " tasks, record feedback, fit thresholds and weights.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _catalog(settings: Settings) -> Catalog:
    from agentledger.handlers.bootstrap import load_catalog

    catalog = load_catalog(settings)
    if not catalog.router.routes:
        raise CliError(f"the catalog {catalog.path} declares no routes ([routes.<name>] tables)")
    return catalog


@route_app.command("test")
@one_line_errors
def test(
    text: str = typer.Argument(..., help="The text to route."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score TEXT against every route and show what the router would choose (nothing is
    recorded, nothing runs)."""
    from agentledger.handlers.bootstrap import make_router
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env()
    catalog = _catalog(settings)
    store = EventStore(settings)
    try:
        router = make_router(settings, catalog, store)
    finally:
        store.close()
    decision = router.decide(text)
    thresholds = router.thresholds()
    scores = dict(sorted(decision.scores.items(), key=lambda kv: -kv[1]))
    corrected = router.index.speller.correct(text) if router.params.spelling else text
    data: dict[str, Any] = {
        "text": text,
        "spelling": corrected if corrected != text else None,
        "chosen": decision.chosen,
        "best": decision.best,
        "reason": decision.reason,
        "fallback": decision.fallback,
        "method": router.method,
        "embedder": router.embedder.name,
        "fit_version": router.fit_version,
        "off_topic_score": decision.none_score,
        "scores": scores,
        "thresholds": thresholds,
    }
    if as_json:
        print_json(data)
        return
    table = Table(
        title=f"{router.method} on {router.embedder.name}"
        + (f", fit v{router.fit_version}" if router.fit_version else ", not fitted")
    )
    for column in ("route", "target", "score", "threshold", ""):
        table.add_column(column)
    for name, score in scores.items():
        route = catalog.router.route(name)
        mark = "chosen" if name == decision.chosen else ("best" if name == decision.best else "")
        table.add_row(
            name,
            f"{route.target_kind} {route.target}",
            f"{score:.3f}",
            "—" if thresholds[name] <= -1 else f"{thresholds[name]:.3f}",
            mark,
        )
    console.print(table)
    if corrected != text:
        console.print(f"also scored as: {corrected}")
    console.print(
        f"off-topic anchors: {decision.none_score:.3f}  ->  "
        + (f"route {decision.chosen}" if decision.chosen else "no route")
        + f" ({decision.reason}{', fallback' if decision.fallback else ''})"
    )


@route_app.command("publish")
@one_line_errors
def publish(
    text: str = typer.Argument(..., help="The prompt to route and run."),
    session: str = typer.Option(None, help="Session id of the routed run."),
    task_id: str = typer.Option(None, help="Task id (idempotency key); default: random."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the outcome."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Publish a RouteTask on <prefix>.tasks.route and wait for its outcome."""
    from agentledger.domain.subjects import route_subject
    from agentledger.handlers.graphs.cli import send_task

    task = task_id or uuid.uuid4().hex
    payload: dict[str, Any] = {"task_id": task, "prompt": text}
    if session:
        payload["session_id"] = session
    outcome = run(send_task(route_subject, payload, task, timeout))
    if as_json:
        print_json(outcome)
        return
    route = outcome.get("route") or {}
    console.print(
        f"{outcome.get('status')}: route {route.get('name')!r}"
        f" ({route.get('target_kind')} {route.get('target')}, score {route.get('score')})"
    )
    if outcome.get("error"):
        console.print(f"error: {outcome['error']['kind']}: {outcome['error']['message']}")
    else:
        console.print(f"output: {json.dumps(outcome.get('output'))}")


@route_app.command("feedback")
@one_line_errors
def feedback(
    identifier: str = typer.Argument(..., help="The route task id, or its routed run id."),
    correct: bool = typer.Option(False, "--correct", help="The chosen route was right."),
    wrong: str = typer.Option(
        None, "--wrong", help="The route that was right instead ('none': no route was)."
    ),
    note: str = typer.Option(None, help="A note kept with the feedback."),
) -> None:
    """Record whether a routing decision was right (`route fit` learns from it)."""
    from uuid import UUID

    from agentledger.domain.ids import route_decision_id_for
    from agentledger.domain.routing.decision import RouteDecision
    from agentledger.domain.run import AgentRun
    from agentledger.infra.event_store import EventStore

    if correct == (wrong is not None):
        raise CliError("say either --correct or --wrong <route>")
    settings = settings_from_env(announce_store=True)
    catalog = _catalog(settings)
    store = EventStore(settings)
    try:
        decision = store.get(route_decision_id_for(identifier), RouteDecision)
        if decision is None:
            try:
                routed = store.get(UUID(identifier), AgentRun)
            except ValueError:
                routed = None
            if routed is not None:
                decision = store.get(route_decision_id_for(routed.task_id), RouteDecision)
        if decision is None:
            raise CliError(f"no routing decision for {identifier!r} (a route task id or run id)")
        expected = decision.chosen if correct else (None if wrong == "none" else wrong)
        if expected is not None and expected not in {r.name for r in catalog.router.routes}:
            raise CliError(
                f"unknown route {expected!r}; routes: {', '.join(r.name for r in catalog.router.routes)}, none"
            )
        decision.give_feedback(correct, expected, note)
        store.save(decision)
    finally:
        store.close()
    verdict = "correct" if correct else f"wrong (right: {expected or 'no route'})"
    console.print(f"feedback recorded for task {decision.task_id}: {verdict}")


def _labelled(path: Path) -> list[Any]:
    from agentledger.domain.routing.fit import Labelled

    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, route = row["text"], row.get("route")
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CliError(
                f'{path}:{number}: expected {{"text": ..., "route": ... | null}}'
            ) from None
        if (
            not isinstance(text, str)
            or not text.strip()
            or not (route is None or isinstance(route, str))
        ):
            raise CliError(
                f"{path}:{number}: text must be a non-empty string, route a string or null"
            )
        items.append(Labelled(text, route))
    return items


@route_app.command("fit")
@one_line_errors
def fit(
    labelled: Path = typer.Option(
        None, help='JSON lines {"text": ..., "route": <name> | null} (null: off-topic).'
    ),
    use_feedback: bool = typer.Option(
        True, "--feedback/--no-feedback", help="Also learn from decisions given feedback."
    ),
    held_out: float = typer.Option(0.3, min=0.1, max=0.9, help="Share kept out to measure."),
    seed: int = typer.Option(7, help="Seed of the held-out split."),
    dry_run: bool = typer.Option(False, help="Measure only; record nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Tune the router on labelled examples and feedback; print accuracy before and
    after on a held-out split; record the fit (trained on everything) for the workers."""
    import dataclasses

    from agentledger.domain.ids import router_model_id
    from agentledger.domain.routing.decision import RouterModel
    from agentledger.domain.routing.fit import Labelled, accuracy, split
    from agentledger.domain.routing.fit import fit as fit_params
    from agentledger.domain.routing.routes import routes_digest
    from agentledger.domain.routing.scoring import RouteIndex, RouterParams
    from agentledger.handlers.bootstrap import make_projector
    from agentledger.handlers.memory import embedder_for
    from agentledger.handlers.routing.router import Router
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.view_store import view_store_for
    from agentledger.projections.routing import list_route_decisions

    settings = settings_from_env(announce_store=True)
    catalog = _catalog(settings)
    items: list[Labelled] = _labelled(labelled) if labelled else []
    store = EventStore(settings)
    views = view_store_for(settings)
    try:
        if use_feedback:
            projector = make_projector(settings, store, views)
            while projector.run_once():
                pass
            with views.read() as cursor:
                rows = list_route_decisions(
                    cursor, with_feedback=True, limit=100_000, sealer=views.sealer
                )
            items += [Labelled(r.prompt, r.feedback_expected) for r in rows]
        if len(items) < 4:
            raise CliError(
                f"{len(items)} labelled example(s); give --labelled FILE or record feedback"
                " (`agentledger route feedback`) first"
            )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            step = progress.add_task("embedding the examples and routes", total=None)
            embedder = embedder_for(settings)
            spec = catalog.router
            # The routes as a worker scores them (defaults, no fit), vectors from the cache.
            index = Router(
                spec, embedder, cache_folder=settings.data_dir / "cache" / "route-vectors"
            ).index
            vectors = index.embed_queries([i.text for i in items])
            by_text = {i.text: v for i, v in zip(items, vectors, strict=True)}
            train, test = split(items, lambda i: i.route, held_out, seed)

            def matrix(subset: list[Labelled]) -> Any:
                import numpy as np

                return (
                    np.stack([by_text[i.text] for i in subset])
                    if subset
                    else np.zeros((0, embedder.dim), np.float32)
                )

            base = RouterParams(method=spec.method, margin=spec.margin, spelling=spec.spelling)
            before = accuracy(index, base, matrix(test), test)
            progress.update(step, description=f"fitting {spec.method} on {len(train)} examples")
            measured = fit_params(spec.routes, embedder, base, matrix(train), train, index.vectors)
            learned = RouteIndex(spec.routes, embedder, index.vectors | by_text, measured.examples)
            after = accuracy(learned, measured, matrix(test), test)
            progress.update(step, description=f"fitting {spec.method} on all {len(items)} examples")
            final = fit_params(spec.routes, embedder, base, vectors, items, index.vectors)
        result = {
            "method": spec.method,
            "embedder": embedder.name,
            "examples": len(items),
            "trained_on": len(train),
            "held_out": len(test),
            "accuracy_before": round(before, 4),
            "accuracy_after": round(after, 4),
            "none_bias": final.none_bias,
            "threshold": final.threshold,
            "margin": final.margin,
            "thresholds": final.thresholds,
            "recorded": not dry_run,
        }
        if not dry_run:
            model = store.get(router_model_id(settings.subject_prefix), RouterModel)
            if model is None:
                model = RouterModel(name=settings.subject_prefix)
            model.record_fit(
                method=spec.method,
                embedder=embedder.name,
                routes_digest=routes_digest(spec.routes),
                params=dataclasses.replace(final).as_json(),
                examples=len(items),
                held_out=len(test),
                accuracy_before=round(before, 4),
                accuracy_after=round(after, 4),
            )
            store.save(model)
            result["fit_version"] = model.version
    finally:
        views.close()
        store.close()
    if as_json:
        print_json(result)
        return
    console.print(
        f"{spec.method} on {embedder.name}: {len(items)} labelled examples, held out"
        f" {len(test)}: accuracy {before:.3f} before, {after:.3f} after"
    )
    if dry_run:
        console.print("dry run: nothing recorded")
    else:
        console.print(
            f"recorded fit v{result['fit_version']} (trained on all {len(items)}); workers use"
            " it from their next start"
        )


@route_app.command("show")
@one_line_errors
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The catalog's routes, the router's method, and the latest fit."""
    from agentledger.domain.ids import router_model_id
    from agentledger.domain.routing.decision import RouterModel
    from agentledger.infra.event_store import EventStore

    settings = settings_from_env()
    catalog = _catalog(settings)
    store = EventStore(settings)
    try:
        model = store.get(router_model_id(settings.subject_prefix), RouterModel)
    finally:
        store.close()
    fit_info = None
    if model is not None and model.fit is not None:
        fit_info = {k: v for k, v in model.fit.items() if k != "params"} | {
            "version": model.version
        }
    spec = catalog.router
    data = {
        "method": spec.method,
        "fallback": spec.fallback,
        "margin": spec.margin,
        "spelling": spec.spelling,
        "routes": [r.model_dump() for r in spec.routes],
        "fit": fit_info,
    }
    if as_json:
        print_json(data)
        return
    table = Table(title=f"routes ({spec.method}; fallback: {spec.fallback or 'none'})")
    for column in ("route", "target", "examples", "threshold", "description"):
        table.add_column(column, overflow="fold")
    for r in spec.routes:
        table.add_row(
            r.name,
            f"{r.target_kind} {r.target}",
            str(len(r.examples)),
            "" if r.threshold is None else f"{r.threshold:.2f}",
            r.description,
        )
    console.print(table)
    console.print(
        "fit: none recorded"
        if fit_info is None
        else f"fit v{fit_info['version']}: {fit_info['method']} on {fit_info['embedder']},"
        f" accuracy {fit_info['accuracy_before']:.3f} -> {fit_info['accuracy_after']:.3f}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(route_app, name="route")
