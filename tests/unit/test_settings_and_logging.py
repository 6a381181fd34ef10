"""Settings from AGENTLEDGER_* variables; secrets never shown; logs redact them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentledger.infra.event_store import postgres_env
from agentledger.infra.logging import redact
from agentledger.infra.settings import Settings


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLEDGER_SUBJECT_PREFIX", "acme")
    monkeypatch.setenv("AGENTLEDGER_WORKER_CONCURRENCY", "12")
    monkeypatch.setenv("AGENTLEDGER_POSTGRES_DSN", "postgresql://u:hunter2@db:5433/ledger")
    settings = Settings()
    assert settings.subject_prefix == "acme" and settings.worker_concurrency == 12
    assert settings.backend == "postgres"
    assert settings.tasks_stream == "ACME_TASKS"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.safe_postgres_target() == "db:5433/ledger"


def test_defaults_are_the_embedded_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTLEDGER_POSTGRES_DSN", "AGENTLEDGER_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.backend == "sqlite" and settings.subject_prefix == "ledger"
    assert settings.sqlite_file.name == "ledger.db"


def test_tls_cert_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="AGENTLEDGER_NATS_TLS_KEY"):
        Settings(nats_tls_cert="/tmp/cert.pem")


def test_postgres_dsn_maps_to_eventsourcing_environment() -> None:
    env = postgres_env("postgresql://al:p%40ss@127.0.0.1:6543/events?schema=ledger")
    assert env["POSTGRES_PASSWORD"] == "p@ss" and env["POSTGRES_PORT"] == "6543"
    assert env["POSTGRES_DBNAME"] == "events" and env["POSTGRES_SCHEMA"] == "ledger"
    with pytest.raises(ValueError, match="postgresql://"):
        postgres_env("mysql://x@y/z")


def test_log_redaction_blanks_secrets_and_url_credentials() -> None:
    event = {
        "event": "connecting",
        "nats_password": "pw",
        "token": "tk",
        "postgres_dsn": "postgresql://u:pw@h/db",
        "url": "nats://user:pw@host:4222",
        "task_id": "t-1",
    }
    out = redact(None, "info", dict(event))
    assert out["nats_password"] == out["token"] == out["postgres_dsn"] == "***"
    assert out["url"] == "nats://***@host:4222"
    assert out["task_id"] == "t-1" and out["event"] == "connecting"


def test_only_faststreams_empty_fetch_report_is_silenced() -> None:
    import logging

    from agentledger.infra.nats import _faststream_logger

    logger = _faststream_logger(Settings())
    (pull_filter,) = logger.filters

    def record(exc: BaseException, message: str) -> logging.LogRecord:
        return logging.LogRecord(
            "agentledger.faststream",
            logging.ERROR,
            __file__,
            1,
            message,
            None,
            (type(exc), exc, None),
        )

    assert not pull_filter.filter(
        record(TimeoutError(), "Task-11 raised an exception, retrying...")
    )
    assert pull_filter.filter(record(RuntimeError("x"), "Task-11 raised an exception, retrying..."))
    assert pull_filter.filter(record(TimeoutError(), "handler failed"))


def test_a_long_running_process_freezes_start_up_objects_and_collects_less_often() -> None:
    """`agentledger worker` / `project` call tune_gc once started; 0 keeps Python's GC."""
    import gc

    from agentledger.handlers.cli_support import tune_gc
    from agentledger.infra.settings import Settings

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0

        tune_gc(Settings().gc_threshold)
        assert gc.get_threshold() == (20_000, 20, 20)
        assert gc.get_freeze_count() > 1000  # the modules and objects start-up built
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_gc_threshold_comes_from_the_environment(monkeypatch) -> None:
    from agentledger.handlers.cli_support import settings_from_env

    monkeypatch.setenv("AGENTLEDGER_GC_THRESHOLD", "0")
    assert settings_from_env().gc_threshold == 0
