"""NATS connection settings, the FastStream broker and the JetStream streams.

Credentials come from settings only; they are handed to the client and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from faststream.nats import NatsBroker
from faststream.nats.security import NatsNKey, NatsSecurity, NatsToken, NatsUserPassword
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from agentledger.domain.subjects import (
    dead_stream,
    dead_subject,
    results_stream,
    streams_stream,
    task_stream_subjects,
)
from agentledger.infra.settings import Settings

__all__ = [
    "DEFAULT_LOCAL_URL",
    "ensure_streams",
    "make_broker",
    "nats_connect_kwargs",
    "nats_url",
    "results_stream",
    "without_credentials",
]

DEFAULT_LOCAL_URL = "nats://127.0.0.1:4222"
"""Where `agentledger nats` listens; the default when AGENTLEDGER_NATS_URL is unset."""

log = structlog.get_logger("agentledger")


def nats_url(settings: Settings) -> str:
    return settings.nats_url or DEFAULT_LOCAL_URL


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert and settings.nats_tls_key:
        context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return context


def _security(settings: Settings) -> NatsSecurity | None:
    context = _ssl_context(settings)
    if settings.nats_token is not None:
        return NatsToken(settings.nats_token.get_secret_value(), ssl_context=context)
    if settings.nats_user is not None:
        password = settings.nats_password.get_secret_value() if settings.nats_password else ""
        return NatsUserPassword(settings.nats_user, password, ssl_context=context)
    if settings.nats_nkey_seed_file is not None:
        return NatsNKey(settings.nats_nkey_seed_file, ssl_context=context)
    if context is not None:
        return NatsSecurity(ssl_context=context, use_ssl=True)
    return None


def without_credentials(url: str) -> str:
    """The URL with any user and password replaced by `***` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = f"***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class _ConnectionReports:
    """Logs a client losing and regaining its server.

    nats-py's callbacks take no arguments, so the URL reported is the configured one.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self._url = without_credentials(nats_url(settings))
        self._name = name
        self._lost: asyncio.Handle | None = None
        self._reconnecting = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "closed_cb": self._closed,
        }

    async def _disconnected(self) -> None:
        # nats-py also calls this right before `closed_cb` when the client is closed on
        # purpose; waiting one loop turn lets `_closed` withdraw the warning.
        self._lost = asyncio.get_running_loop().call_soon(self._report_lost)

    def _report_lost(self) -> None:
        self._reconnecting = True
        log.warning("nats disconnected", url=self._url, client=self._name)

    async def _reconnected(self) -> None:
        self._reconnecting = False
        log.info("nats reconnected", url=self._url, client=self._name)

    async def _closed(self) -> None:
        if self._lost is not None:
            self._lost.cancel()
        if self._reconnecting:
            log.warning(
                "nats connection closed while reconnecting", url=self._url, client=self._name
            )
        else:
            log.debug("nats connection closed", url=self._url, client=self._name)


def nats_connect_kwargs(settings: Settings, name: str) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` (plain nats-py clients: CLI, relay).

    They include the disconnect, reconnect and close callbacks (which log); a caller may
    add its own `error_cb`.
    """
    kwargs: dict[str, Any] = {
        "servers": [nats_url(settings)],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "allow_reconnect": True,
        **_ConnectionReports(settings, name).callbacks(),
    }
    if settings.nats_token is not None:
        kwargs["token"] = settings.nats_token.get_secret_value()
    if settings.nats_user is not None:
        kwargs["user"] = settings.nats_user
        kwargs["password"] = (
            settings.nats_password.get_secret_value() if settings.nats_password else ""
        )
    if settings.nats_nkey_seed_file is not None:
        kwargs["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    if settings.nats_creds_file is not None:
        kwargs["user_credentials"] = str(settings.nats_creds_file)
    context = _ssl_context(settings)
    if context is not None:
        kwargs["tls"] = context
    return kwargs


class _PullTimeoutFilter(logging.Filter):
    """Drops FastStream's "raised an exception, retrying" report for an empty fetch.

    nats-py 2.16 ends an empty pull with `asyncio.TimeoutError`, FastStream 0.7.8 only
    expects nats' own `TimeoutError`; its supervisor restarts the fetch loop (harmless)
    but logs it as an ERROR with a traceback, which would alarm operators for nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (type(exc) is TimeoutError and "retrying" in record.getMessage())


def _faststream_logger(settings: Settings) -> logging.Logger:
    logger = logging.getLogger("agentledger.faststream")
    logger.setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    if not any(isinstance(f, _PullTimeoutFilter) for f in logger.filters):
        logger.addFilter(_PullTimeoutFilter())
    return logger


def make_broker(settings: Settings, name: str) -> NatsBroker:
    """A FastStream broker: the worker's connection (its pull loop is our own, see
    handlers/task_consumer.py) and publisher."""
    extra: dict[str, Any] = {}
    if settings.nats_creds_file is not None:
        extra["user_credentials"] = str(settings.nats_creds_file)
    return NatsBroker(
        nats_url(settings),
        security=_security(settings),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        **_ConnectionReports(settings, name).callbacks(),
        # FastStream's own chatter (per-message lines, task callbacks) only when
        # debugging; its warnings and errors still show.
        logger=_faststream_logger(settings),
        log_level=logging.DEBUG,
        **extra,
    )


def _stream_configs(settings: Settings) -> list[StreamConfig]:
    prefix = settings.subject_prefix
    window = settings.duplicate_window_s
    return [
        StreamConfig(
            name=settings.tasks_stream,
            # Only subjects a worker consumes: a publish elsewhere under
            # `<prefix>.tasks.` finds no stream and fails, instead of waiting forever.
            subjects=task_stream_subjects(prefix),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=window,
            max_age=7 * 24 * 3600,
            num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=results_stream(prefix),
            subjects=[f"{prefix}.results.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=window,
            max_age=24 * 3600,
            max_msgs_per_subject=1,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
        ),
        StreamConfig(
            name=settings.events_stream,
            subjects=[f"{prefix}.events.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=window,
            max_age=7 * 24 * 3600,
            num_replicas=settings.stream_replicas,
        ),
        # Streamed chunks (`<prefix>.stream.<task_id>`, core NATS publishes) kept a
        # while, so a subscriber can join late or resume from a sequence. On file: a
        # memory stream reserves its byte limit up front, and a server's JetStream
        # memory is small (a test server's few MB; one stream per prefix).
        StreamConfig(
            name=streams_stream(prefix),
            subjects=[f"{prefix}.stream.*"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=settings.stream_max_age_s,
            max_msgs_per_subject=100_000,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
        ),
        # Task messages a worker gave up on without being able to record why; kept
        # until an operator retries or purges them (`agentledger dead`).
        StreamConfig(
            name=dead_stream(prefix),
            subjects=[dead_subject(prefix)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=window,
            max_age=30 * 24 * 3600,
            num_replicas=settings.stream_replicas,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the tasks, results, events and dead-letter streams that are missing.

    An existing stream keeps the settings an operator gave it (replicas, limits, ages);
    only its subjects are brought to what this version consumes, since a worker depends
    on them (e.g. the tasks stream takes `<prefix>.tasks.run.*` only).
    """
    for config in _stream_configs(settings):
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            continue
        if sorted(info.config.subjects or []) != sorted(config.subjects or []):
            await js.update_stream(replace(info.config, subjects=config.subjects))
