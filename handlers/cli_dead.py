"""`agentledger dead list|show|retry`: the task messages workers gave up on."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    print_json,
    run,
    settings_from_env,
)

__all__ = ["register"]

dead_app = typer.Typer(
    help="Task messages the workers gave up on (kept in <PREFIX>_DEAD): list, show, retry.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


async def _with_js(action: Any) -> Any:
    from agentledger.handlers.bootstrap import connect_nats
    from agentledger.infra.nats import ensure_streams

    settings = settings_from_env()
    nc = await connect_nats(settings, "agentledger-cli")
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        return await action(js, settings.subject_prefix)
    finally:
        await nc.drain()


@dead_app.command("list")
@one_line_errors
def list_(
    limit: int = typer.Option(100, min=1, help="At most this many."),
    after: int = typer.Option(0, min=0, help="Only those after this sequence number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dead letters, oldest first."""
    from agentledger.handlers.dead_letters import list_dead_letters

    letters = run(_with_js(lambda js, p: list_dead_letters(js, p, limit=limit, after=after)))
    if as_json:
        print_json([letter.as_dict() for letter in letters])
        return
    table = Table(title=f"Dead letters ({len(letters)})")
    for column in ("seq", "at (UTC)", "task", "subject", "delivered", "kind", "reason"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.sequence),
            letter.at[:19],
            letter.task_id or "-",
            letter.subject,
            str(letter.delivered),
            letter.kind,
            letter.reason,
        )
    console.print(table)


@dead_app.command()
@one_line_errors
def show(
    sequence: int = typer.Argument(..., help="The dead letter's sequence number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one dead letter: why, when, its headers and its original payload."""
    from agentledger.handlers.dead_letters import get_dead_letter

    letter = run(_with_js(lambda js, p: get_dead_letter(js, p, sequence)))
    data = letter.as_dict()
    if as_json:
        print_json(data)
        return
    table = Table(title=f"Dead letter {sequence}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


@dead_app.command()
@one_line_errors
def retry(
    sequences: list[int] = typer.Argument(None, help="Sequence numbers to requeue."),
    all_: bool = typer.Option(False, "--all", help="Requeue every dead letter."),
) -> None:
    """Requeue dead letters: each payload goes back to its subject, keeping its task id
    (so it lands on the same run), and leaves the dead-letter stream."""
    from agentledger.handlers.dead_letters import list_dead_letters, retry_dead_letter

    if not sequences and not all_:
        raise CliError("name the dead letters to retry (SEQUENCE...) or pass --all")

    async def requeue(js: Any, prefix: str) -> list[Any]:
        chosen = sequences or [
            letter.sequence for letter in await list_dead_letters(js, prefix, limit=100_000)
        ]
        return [await retry_dead_letter(js, prefix, s) for s in chosen]

    for letter in run(_with_js(requeue)):
        console.print(
            f"requeued dead letter {letter.sequence} (task {letter.task_id or '-'})"
            f" to {letter.subject}",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(dead_app, name="dead")
