"""The embedded nats-server and PostgreSQL launchers, against the real binaries."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from agentledger.infra.nats_server import EmbeddedNats, EmbeddedServerError, NatsAuth, free_port
from agentledger.infra.settings import Settings
from support.postgres_server import EmbeddedPostgres, drop_database_on


async def _connect(url: str, **kwargs: Any) -> NATS:
    # No reconnect loop: a rejected connection must fail at once, not retry for seconds.
    return await nats.connect(
        url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, **kwargs
    )


async def _publish_and_count(url: str, stream: str, n: int, **auth: Any) -> int:
    """Publish n messages to a (new or existing) stream; return its message count."""
    nc = await _connect(url, **auth)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        for i in range(n):
            ack = await js.publish(f"{stream.lower()}.x", f"m{i}".encode())
            assert ack.stream == stream
        info = await js.stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


# -- NATS --------------------------------------------------------------------------------


async def test_jetstream_publish_ack(nats_url: str) -> None:
    stream = "T" + uuid.uuid4().hex[:10].upper()
    nc = await _connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.a", b"hello", headers={"Nats-Msg-Id": "m-1"})
        assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, None)
        # Same Nats-Msg-Id within the duplicate window: acked, flagged, not stored twice.
        dup = await js.publish(f"{stream}.a", b"hello", headers={"Nats-Msg-Id": "m-1"})
        assert dup.duplicate is True
        stored = await js.get_msg(stream, seq=1)
        assert stored.data == b"hello"
        assert (await js.stream_info(stream)).state.messages == 1
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_embedded_nats_is_isolated_and_sized(tmp_path: Path) -> None:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        # Own session: a Ctrl-C aimed at the test runner's process group misses it.
        assert os.getsid(server.pid) == server.pid
        nc = await _connect(server.url)
        try:
            assert nc.max_payload == 8 * 1024 * 1024
        finally:
            await nc.close()
    assert not server.is_running


async def test_user_password_auth(tmp_path: Path) -> None:
    auth = NatsAuth(user="ledger", password='s3cret "#} pass')
    with EmbeddedNats(store_dir=tmp_path / "nats", auth=auth) as server:
        assert "ledger" not in server.url
        for bad in ({"user": "ledger", "password": "wrong"}, {"user": "nobody"}, {}):
            with pytest.raises(NatsError, match="Authorization Violation"):
                await _connect(server.url, **bad)
        count = await _publish_and_count(
            server.url, "AUTHU", 2, user="ledger", password='s3cret "#} pass'
        )
        assert count == 2


async def test_token_auth(tmp_path: Path) -> None:
    with EmbeddedNats(store_dir=tmp_path / "nats", auth=NatsAuth(token="tok-123")) as server:
        for bad in ({"token": "tok-999"}, {}):
            with pytest.raises(NatsError, match="Authorization Violation"):
                await _connect(server.url, **bad)
        assert await _publish_and_count(server.url, "AUTHT", 1, token="tok-123") == 1


def test_nats_auth_schemes_are_exclusive() -> None:
    with pytest.raises(ValueError):
        NatsAuth(user="u", password="p", token="t")
    with pytest.raises(ValueError):
        NatsAuth(user="u")
    with pytest.raises(ValueError):
        NatsAuth()


@pytest.mark.slow
async def test_jetstream_data_survives_restart_and_crash(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats", sync_always=True)
    with server:
        url = server.url
        assert await _publish_and_count(url, "KEEP", 3) == 3
        assert "sync_interval: always" in server.config_file.read_text()

        server.stop()
        assert not server.is_running
        server.start()
        assert server.url == url  # same port: clients can reconnect
        assert await _publish_and_count(url, "KEEP", 1) == 4

        server.kill()  # crash: no shutdown flush; sync_always must have persisted it
        server.start()
        assert await _publish_and_count(url, "KEEP", 0) == 4


def test_nats_start_failure_reports_log(tmp_path: Path) -> None:
    # Hold the port with a plain listener so nats-server cannot bind it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedNats(store_dir=tmp_path / "nats", port=port)
        with pytest.raises(EmbeddedServerError, match=r"(?i)address already in use"):
            server.start()
        assert not server.is_running


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """A scratch directory for a private EmbeddedPostgres (outside pytest's basetemp, for
    the same reason as the session server in conftest)."""
    pytest.importorskip("pgserver")
    root = Path(tempfile.mkdtemp(prefix="agentledger-pgtest-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_pgvector_cosine_nearest_row(postgres_server: EmbeddedPostgres | None) -> None:
    if postgres_server is None:
        pytest.skip("AGENTLEDGER_POSTGRES_DSN is set: no embedded server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(postgres_server.dsn(name)) as conn:
            conn.execute("CREATE EXTENSION vector")  # plain: fails if the library cannot load
            conn.execute("CREATE TABLE items (id text PRIMARY KEY, embedding vector(3))")
            conn.execute(
                "INSERT INTO items VALUES ('far-but-aligned', '[10,1,0]'), "
                "('near-but-skewed', '[0.5,0.5,0.5]'), ('opposite', '[-1,0,0]')"
            )
            conn.execute("CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops)")
            query = "[1,0,0]"
            cosine = conn.execute(
                "SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 1", (query,)
            ).fetchone()
            euclid = conn.execute(
                "SELECT id FROM items ORDER BY embedding <-> %s::vector LIMIT 1", (query,)
            ).fetchone()
            # Cosine ignores magnitude, L2 does not: the two operators must disagree here.
            assert cosine == ("far-but-aligned",)
            assert euclid == ("near-but-skewed",)
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.slow
def test_postgres_stop_start_keeps_data(pg_root: Path) -> None:
    server = EmbeddedPostgres(pg_root / "data")
    with server:
        dsn = server.create_database("keep")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (1), (2)")

        server.stop()
        assert not server.is_running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2).close()

        server.start()
        assert server.is_running
        assert server.dsn("keep") == dsn  # same port after a restart
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT sum(v) FROM t").fetchone() == (3,)
            conn.execute("INSERT INTO t VALUES (3)")

        server.restart()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT sum(v) FROM t").fetchone() == (6,)
    assert not server.is_running


def test_create_database_isolated(postgres_server: EmbeddedPostgres | None) -> None:
    if postgres_server is None:
        pytest.skip("AGENTLEDGER_POSTGRES_DSN is set: no embedded server")
    suffix = uuid.uuid4().hex[:8]
    names = [f"iso_a_{suffix}", f"iso_b_{suffix}"]
    try:
        dsn_a, dsn_b = (postgres_server.create_database(name) for name in names)
        assert dsn_a != dsn_b
        with psycopg.connect(dsn_a) as conn:
            conn.execute("CREATE TABLE only_in_a (v int)")
        with psycopg.connect(dsn_b) as conn:
            assert conn.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
            # Both come with pgvector ready.
            vector = "SELECT extname FROM pg_extension WHERE extname = 'vector'"
            assert conn.execute(vector).fetchone() == ("vector",)
        with pytest.raises(ValueError):
            postgres_server.create_database("Robert'); DROP TABLE students;--")
    finally:
        for name in names:
            drop_database_on(postgres_server.dsn(), name)


async def test_fixtures_give_isolated_settings(
    make_settings: Callable[..., Settings], backend: str, nats_url: str
) -> None:
    settings = make_settings(backend)
    again = make_settings(backend, worker_concurrency=3)
    assert isinstance(settings, Settings)
    assert settings.backend == backend
    assert settings.nats_url == nats_url
    # One test, one prefix and one store: components built from either share state.
    assert settings.subject_prefix == again.subject_prefix
    assert settings.postgres_dsn == again.postgres_dsn
    assert again.worker_concurrency == 3
    if backend == "postgres":
        assert settings.postgres_dsn is not None
        with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
