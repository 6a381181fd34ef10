"""`agentledger memory search|stats`: the memory view searched by meaning."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    print_json,
    query_views,
    settings_from_env,
)

__all__ = ["register"]

memory_app = typer.Typer(
    help="Semantic memory: search every prompt and output by meaning.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _when(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"invalid {flag}: {value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise CliError(f"invalid {flag}: {value!r} has no time zone (add Z or +00:00)")
    return moment.isoformat()


@memory_app.command("search")
@one_line_errors
def search(
    query: str = typer.Argument(..., help="What to look for, in your own words."),
    k: int = typer.Option(5, "--k", "-k", min=1, max=100, help="How many hits."),
    agent: str = typer.Option(None, help="Only this agent's turns."),
    session: str = typer.Option(None, help="Only this session's turns."),
    since: str = typer.Option(None, help="Only turns at or after this time (ISO 8601, with zone)."),
    until: str = typer.Option(None, help="Only turns before this time (ISO 8601, with zone)."),
    role: str = typer.Option(None, help="user (prompts) or assistant (outputs)."),
    via_nats: bool = typer.Option(
        False, "--nats", help="Ask the query responder over NATS instead of the views."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The stored prompts and outputs most similar to QUERY (cosine, best first)."""
    if role not in (None, "user", "assistant"):
        raise CliError(f"invalid --role: {role!r} (user or assistant)")
    settings = settings_from_env(announce_store=not via_nats)
    arguments: dict[str, Any] = {
        "query": query,
        "k": k,
        "agent": agent,
        "session_id": session,
        "since": _when(since, "--since"),
        "until": _when(until, "--until"),
        "role": role,
    }
    hits = query_views(
        settings, "memory", {a: v for a, v in arguments.items() if v is not None}, via_nats
    )
    if as_json:
        print_json(hits)
        return
    table = Table(title=f"memory: {len(hits)} hit(s) for {query!r}")
    for column in ("score", "role", "agent", "session", "run", "at", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        table.add_row(
            f"{hit['score']:.3f}",
            hit["role"],
            hit["agent"],
            hit["session_id"] or "",
            hit["run_id"][:8],
            str(hit["at"])[:19],
            hit["text"] if len(hit["text"]) <= 160 else hit["text"][:159] + "…",
        )
    console.print(table)


@memory_app.command("stats")
@one_line_errors
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """How many texts the memory view holds, and which embedder and index made it."""
    from agentledger.handlers.memory import open_memory

    settings = settings_from_env(announce_store=True)
    with open_memory(settings) as memory:
        data = memory.stats()
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")
