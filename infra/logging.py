"""structlog configuration: readable in a terminal, JSON in production, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

__all__ = ["configure_logging", "current_format", "redact"]

_format = "console"


def current_format() -> str:
    """The format `configure_logging` last set (`console` before it is called), so that
    lines written outside logging (a CLI's final error) can match it."""
    return _format


_SECRET_KEYS = re.compile(
    r"(^|_)(password|passwd|token|secret|dsn|credentials?|seed|cipher_key|api_key)$", re.I
)
_URL_CREDENTIALS = re.compile(r"(\w+://)([^/@\s:]+)(:[^/@\s]*)?@")


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Blank values under secret-looking keys; strip credentials out of URLs."""
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEYS.search(key):
            event_dict[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event_dict[key] = _URL_CREDENTIALS.sub(r"\1***@", value)
    return event_dict


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Configure structlog and stdlib logging once per process.

    Every record, ours and the libraries' (faststream, nats-py, asyncio, psycopg_pool,
    eventsourcing, captured `warnings`), goes through one stderr handler and the same
    processors, so JSON mode prints nothing but JSON lines.
    """
    global _format
    _format = "json" if fmt == "json" else "console"
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_rendering(fmt),
            ],
        )
    )
    # Libraries speak from warnings up; our own loggers (all `agentledger.*`) at `level`.
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    logging.getLogger("agentledger").setLevel(numeric)
    logging.captureWarnings(True)
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _PeerClosedFilter) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_PeerClosedFilter())


class _PeerClosedFilter(logging.Filter):
    """asyncio logs a peer closing a socket (a server refusing our credentials, a
    restart) with a full traceback; the cause is already reported by whoever owns the
    connection, so keep the line and drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConnectionResetError | BrokenPipeError):
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _rendering(fmt: str) -> list[Processor]:
    """Redaction and the renderer; tracebacks never carry local variables (prompts,
    passwords)."""
    if fmt == "json":
        return [structlog.processors.format_exc_info, redact, structlog.processors.JSONRenderer()]
    colors = sys.stderr.isatty()
    exception_formatter = (
        structlog.dev.RichTracebackFormatter(show_locals=False)
        if colors
        else structlog.dev.plain_traceback
    )
    return [
        redact,
        structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=exception_formatter),
    ]
