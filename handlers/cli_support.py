"""What every `agentledger` command shares: the console, one-line errors, settings,
JSON output, and resolving a run/task/session id to its events."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console

from agentledger.domain.ids import rejection_id_for, run_id_for, session_aggregate_id_for
from agentledger.infra.logging import configure_logging
from agentledger.infra.settings import Settings

__all__ = [
    "CliError",
    "console",
    "err_console",
    "one_line_errors",
    "print_json",
    "resolve",
    "run",
    "settings_from_env",
    "until_signal",
]

# Piped output gets a wide, fixed width instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True)
"""For progress bars, so stdout stays clean for tables and JSON."""

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
        return f"invalid setting {where}: {first['msg']} (see AGENTLEDGER_* variables)"
    return text.splitlines()[0]


def one_line_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            # Plain write: rich would wrap a long message onto a second line.
            sys.stderr.write(f"error: {explain(e)}\n")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings_from_env(**overrides: Any) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_format, settings.log_level)
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


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
        session_aggregate_id_for(identifier),
        rejection_id_for(identifier),
    ]
    for candidate in candidates:
        events = store.events(candidate)
        if events:
            return candidate, events
    raise CliError(f"no events for {identifier!r} (tried it as run id, task id and session id)")
