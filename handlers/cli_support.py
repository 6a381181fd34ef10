"""What every `agentledger` command shares: the console, one-line errors, settings,
JSON output, and resolving a run/task/session id to its events."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console

from agentledger.domain.ids import (
    graph_run_id_for,
    rejection_id_for,
    run_id_for,
    session_aggregate_id_for,
)
from agentledger.infra.logging import configure_logging, current_format
from agentledger.infra.settings import Settings

__all__ = [
    "CliError",
    "console",
    "err_console",
    "invalid_input",
    "notify",
    "one_line_errors",
    "print_json",
    "query_views",
    "resolve",
    "run",
    "settings_from_env",
    "until_signal",
]

# Piped output follows COLUMNS when set, else a wide fixed width instead of rich's 80.
console = Console(
    width=None if sys.stdout.isatty() else shutil.get_terminal_size((150, 24)).columns
)
err_console = Console(
    stderr=True,
    width=None if sys.stderr.isatty() else shutil.get_terminal_size((150, 24)).columns,
)
"""For progress bars, so stdout stays clean for tables and JSON."""


def notify(message: str, level: str = "info") -> None:
    """One line on stderr (a notice, a store name, what we wait for, the final error):
    plain and never wrapped or cut, whatever the terminal width; a JSON object when
    `AGENTLEDGER_LOG_FORMAT=json`, so that stderr stays JSON only."""
    if current_format() == "json":
        record = {
            "event": message.removeprefix("error: "),
            "level": level,
            "logger": "agentledger.cli",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        sys.stderr.write(json.dumps(record) + "\n")
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line."""


def explain(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lowered = text.lower()
    if "authorization" in lowered or "authentication" in lowered:
        return (
            "NATS rejected the credentials (authorization violation); check "
            "AGENTLEDGER_NATS_USER / AGENTLEDGER_NATS_PASSWORD / AGENTLEDGER_NATS_TOKEN"
        )
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        variable = f"AGENTLEDGER_{str(first['loc'][0]).upper()}" if first["loc"] else ""
        return f"invalid setting {where} ({variable}): {first['msg']}"
    return " ".join(text.split())


def one_line_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            # Plain write: rich would wrap a long message onto a second line.
            notify(f"error: {explain(e)}", level="error")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings_from_env(*, announce_store: bool = False, **overrides: Any) -> Settings:
    """Settings from `AGENTLEDGER_*` (and the command's flags); logging configured.

    With `announce_store`, a command that reads the store says on stderr which one it
    uses when no variable chose it (so an empty result is never a silent wrong folder).
    """
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_format, settings.log_level)
    chosen = {"data_dir", "sqlite_path", "postgres_dsn"} & settings.model_fields_set
    if announce_store and not chosen:
        notify(
            f"store: {settings.backend} {settings.safe_postgres_target()}"
            " (set AGENTLEDGER_DATA_DIR or AGENTLEDGER_POSTGRES_DSN to choose)"
        )
    return settings


def invalid_input(e: ValidationError, flags: dict[str, str]) -> CliError:
    """A validation error of a command's input, naming the argument or flag it came from."""
    first = e.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    flag = flags.get(field, field)
    return CliError(f"invalid {flag}: {first['msg']}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def tune_gc(threshold: int) -> None:
    """Garbage-collector settings for a long-running process, once it has started.

    An agent run allocates tens of thousands of short-lived objects (pydantic-ai's graph,
    messages, validators). With Python's default threshold (a young collection every 700
    net allocations, an old one every 100 young ones) a worker's collector walked the
    tens of thousands of objects every import left behind over and over: measured with
    `bench/e2e.py`, 0.6-0.9 ms of CPU per run (5.6-5.8 ms -> 4.7-4.9 ms on SQLite). So:
    collect once, freeze what start-up built (it is never garbage: modules, the
    catalog's agents, schemas), and collect young objects every `threshold`
    allocations. Cycles are still collected; they live a little longer. 0 leaves
    Python's settings alone (`AGENTLEDGER_GC_THRESHOLD`)."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 20)


async def until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def resolve(store: Any, identifier: str) -> tuple[UUID, list[Any]]:
    candidates: list[UUID] = []
    try:
        candidates.append(UUID(identifier))
    except ValueError:
        pass
    candidates += [
        run_id_for(identifier),
        graph_run_id_for(identifier),
        session_aggregate_id_for(identifier),
        rejection_id_for(identifier),
    ]
    for candidate in candidates:
        events = store.events(candidate)
        if events:
            return candidate, events
    raise CliError(
        f"no events for {identifier!r} (tried it as run id, task id of an agent or graph run,"
        " and session id)"
    )


def query_views(
    settings: Settings, view: str, arguments: dict[str, Any], via_nats: bool = False
) -> Any:
    """Answer a view query: directly from the view store, or over NATS request-reply."""
    if via_nats:
        from agentledger.handlers.bootstrap import connect_nats
        from agentledger.handlers.client import query_over_nats

        async def ask() -> Any:
            nc = await connect_nats(settings, "agentledger-cli")
            try:
                return await query_over_nats(nc, settings.subject_prefix, view, arguments)
            finally:
                await nc.drain()

        return run(ask())
    from agentledger.handlers.queries import answer
    from agentledger.infra.view_store import view_store_for
    from agentledger.projections.views import ALL_PROJECTIONS

    views = view_store_for(settings)
    try:
        # The views exist as soon as a store does: a fresh store answers "nothing yet".
        for projection in ALL_PROJECTIONS:
            views.ensure(projection)
        memory = None
        if view == "memory":
            from agentledger.handlers.memory import MemoryReader

            memory = MemoryReader.for_settings(settings, views)
        return answer(views, view, arguments, memory)
    finally:
        views.close()
