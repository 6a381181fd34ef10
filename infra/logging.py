"""structlog configuration: readable in a terminal, JSON in production, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact"]

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
    """Configure structlog (and stdlib logging beneath it) once per process."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else (lambda _l, _m, e: e),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
