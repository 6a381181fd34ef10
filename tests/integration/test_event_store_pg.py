"""The event store on PostgreSQL: processes starting together on a fresh database."""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any

import pytest

import agentledger.infra.event_store as event_store
from agentledger.infra.settings import Settings
from support.postgres_server import EmbeddedPostgres


def _start_together(settings: Settings, count: int) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            event_store.EventStore(settings).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_stores_starting_together_on_a_fresh_database_all_come_up(
    make_settings,  # type: ignore[no-untyped-def]
) -> None:
    # Regression: two workers started at once on a new database raced to create the
    # event tables; one died with "duplicate key value violates unique constraint".
    assert _start_together(make_settings("postgres"), 8) == []


def test_without_the_schema_lock_the_race_is_real(
    make_settings,  # type: ignore[no-untyped-def]
    postgres_server: EmbeddedPostgres | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Shows the test above can fail: the same start, minus the lock, collides.
    if postgres_server is None:
        pytest.skip("needs the embedded server to create scratch databases")

    def no_lock(dsn: str) -> Any:
        return contextlib.nullcontext()

    monkeypatch.setattr(event_store, "_schema_lock", no_lock)
    failures = 0
    for _ in range(10):
        dsn = postgres_server.create_database(f"race_{uuid.uuid4().hex[:10]}")
        failures += len(_start_together(make_settings("postgres", postgres_dsn=dsn), 8))
        if failures:
            break
    assert failures > 0
