"""Shared fixtures: one NATS and one PostgreSQL per test session, isolated per test.

Servers start lazily (only when a test asks for them) and once per session (per xdist
worker). Set AGENTLEDGER_NATS_URL / AGENTLEDGER_POSTGRES_DSN to run against servers of your
own instead; tests then still get a fresh database and subject prefix each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import psycopg
import pytest

from agentledger.infra.nats_server import EmbeddedNats
from agentledger.infra.settings import Settings
from support.postgres_server import (
    EmbeddedPostgres,
    create_database_on,
    drop_database_on,
)

Backend = Literal["sqlite", "postgres"]


class MakeSettings(Protocol):
    """Type of the `make_settings` fixture."""

    def __call__(self, backend: Backend, **overrides: Any) -> Settings: ...


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    # Python dies on SIGTERM (CI cancel, `timeout`, `kill`) without running fixture
    # teardown or atexit hooks, orphaning the servers below. Treat it like Ctrl-C instead,
    # which pytest turns into an orderly teardown.
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a JetStream-enabled NATS server shared by the whole session."""
    external = os.environ.get("AGENTLEDGER_NATS_URL")
    if external:
        yield external
        return
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres | None]:
    """The session's embedded PostgreSQL, or None when AGENTLEDGER_POSTGRES_DSN is set.

    Tests may stop/start/restart it, but must leave it running.
    """
    if os.environ.get("AGENTLEDGER_POSTGRES_DSN"):
        yield None
        return
    # Not under pytest's basetemp: as root the data dir belongs to the `pgserver` user, who
    # must be able to traverse its parents, and every pytest session start resets
    # /tmp/pytest-of-root to mode 0700 (concurrent sessions would lock our server out).
    root = Path(tempfile.mkdtemp(prefix="agentledger-pg-"))
    server = EmbeddedPostgres(root / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of the test's own, to stop and start at will (stopping the
    session's server would disturb other tests)."""
    root = Path(tempfile.mkdtemp(prefix="agentledger-pg-own-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_server: EmbeddedPostgres | None) -> Iterator[str]:
    """DSN of a fresh database (with pgvector) for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    if postgres_server is not None:
        admin_dsn = postgres_server.dsn()
        dsn = postgres_server.create_database(name)
    else:
        admin_dsn = os.environ["AGENTLEDGER_POSTGRES_DSN"]
        dsn = create_database_on(admin_dsn, name)
    yield dsn
    # Dropping keeps the session server small (each database costs ~7 MB) and leaves an
    # external server as we found it. A test that left the server down gets no cleanup.
    with contextlib.suppress(psycopg.OperationalError):
        drop_database_on(admin_dsn, name)


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path) -> MakeSettings:
    """Factory for `Settings` isolated to this test.

    Every call in one test shares the subject prefix, data_dir and (for postgres) database,
    so several components built from it see the same streams and store; pass overrides to
    differ. NATS and the database are only brought up when first needed.
    """
    prefix = "t" + uuid.uuid4().hex[:10]
    data_dir = tmp_path / "agentledger"
    data_dir.mkdir()

    def factory(backend: Backend, **overrides: Any) -> Settings:
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f"backend must be 'sqlite' or 'postgres', not {backend!r}")
        values: dict[str, Any] = {
            "subject_prefix": prefix,
            "data_dir": data_dir,
            # Explicit None so an AGENTLEDGER_POSTGRES_DSN in the environment cannot turn a
            # sqlite test into a postgres one (keyword arguments beat the environment).
            "postgres_dsn": None,
            "sqlite_path": None,
        }
        if "nats_url" not in overrides:
            values["nats_url"] = request.getfixturevalue("nats_url")
        if backend == "postgres" and "postgres_dsn" not in overrides:
            values["postgres_dsn"] = request.getfixturevalue("pg_dsn")
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture(params=["postgres", "sqlite"], ids=["pg", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Runs the requesting test once per storage backend."""
    value: Backend = request.param
    return value
