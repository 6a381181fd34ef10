"""`agentledger tool resolve`: a person's decision on a paused run's tool call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    print_json,
    run,
    settings_from_env,
)

if TYPE_CHECKING:
    from agentledger.handlers.tools.resolve import Resolution

__all__ = ["register"]

tool_app = typer.Typer(
    help="Tool calls that need a person: resolve a paused run's side-effecting call.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@tool_app.command()
@one_line_errors
def resolve(
    task_id: str = typer.Argument(..., help="The paused run's task id."),
    retry: bool = typer.Option(False, "--retry", help="Run the tool call again."),
    fail: str = typer.Option(None, "--fail", help="Fail the call (and the run) with MESSAGE."),
    result: str = typer.Option(
        None, "--result", help="Take this as the call's result (JSON, or plain text)."
    ),
    by: str = typer.Option("operator", "--by", help="Who decided (recorded on the run)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Resolve a run paused on a side-effecting tool call whose effect is unknown after a
    crash (`side_effect = "pause"`): `--retry`, `--fail MESSAGE` or `--result VALUE`. The
    decision is recorded on the run and its task is published again: a worker resumes
    it. Find paused runs with `agentledger query runs --status paused`."""
    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.handlers.tools.resolve import NotPaused, parse_result, resolve_paused_run
    from agentledger.infra.event_store import EventStore
    from agentledger.infra.nats import ensure_streams

    chosen = [
        name for name, given in (("retry", retry), ("fail", fail), ("result", result)) if given
    ]
    if len(chosen) != 1:
        raise CliError("choose one of --retry, --fail MESSAGE, --result VALUE")
    resolution: Resolution = chosen[0]  # type: ignore[assignment]
    value: Any = {"retry": None, "fail": fail, "result": parse_result(result or "")}[resolution]
    settings = settings_from_env(announce_store=True)

    async def go() -> Any:
        store = EventStore(settings)
        nc = await connect_nats(settings, "agentledger-cli")
        try:
            js = nc.jetstream()
            await ensure_streams(js, settings)
            return await resolve_paused_run(
                store,
                js,
                settings.subject_prefix,
                task_id,
                resolution,
                value,
                by=by,
            )
        finally:
            await nc.drain()
            store.close()

    try:
        resolved = run(go())
    except NotPaused as e:
        raise CliError(str(e)) from None
    if as_json:
        print_json({"task_id": task_id, "run_id": str(resolved.id), "resolution": resolution})
        return
    console.print(
        f"resolved the run of {task_id} ({resolution}); its task is queued again", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(tool_app, name="tool")
