"""Workers and the CLI reach secured NATS servers through settings alone; wrong
credentials fail with one clear line; no secret appears in any log line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentledger.infra.nats_server import EmbeddedNats, NatsAuth
from agentledger.infra.settings import Settings
from support.agents import write_catalog
from support.harness import cli, settings_env, start_worker_process

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-Pa55-word-4f1a"
TOKEN = "tok-9c2e7d1b5a3f"


@pytest.fixture(params=["user-password", "token"])
def secured(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[EmbeddedNats, dict[str, str], dict[str, str]]]:
    if request.param == "user-password":
        auth = NatsAuth(user="ledger", password=PASSWORD)
        good = {"AGENTLEDGER_NATS_USER": "ledger", "AGENTLEDGER_NATS_PASSWORD": PASSWORD}
        bad = {"AGENTLEDGER_NATS_USER": "ledger", "AGENTLEDGER_NATS_PASSWORD": "wrong-" + PASSWORD}
    else:
        auth = NatsAuth(token=TOKEN)
        good = {"AGENTLEDGER_NATS_TOKEN": TOKEN}
        bad = {"AGENTLEDGER_NATS_TOKEN": "wrong-" + TOKEN}
    server = EmbeddedNats(store_dir=tmp_path / "secure-nats", auth=auth)
    server.start()
    try:
        yield server, good, bad
    finally:
        server.stop()


def test_worker_and_cli_connect_with_credentials_from_settings(
    secured: tuple[EmbeddedNats, dict[str, str], dict[str, str]],
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    server, good, bad = secured
    settings: Settings = make_settings(
        "sqlite", nats_url=server.url, catalog=str(write_catalog(tmp_path)), log_level="DEBUG"
    )
    env = {**settings_env(settings), **good}
    log_path = tmp_path / "worker.log"
    worker = start_worker_process(env, log_path)
    try:
        ok = cli("publish", "calculator", "add 3 and 4", "--task-id", "auth-1", "--json", env=env)
        assert ok.returncode == 0, ok.stderr
        assert '"status": "completed"' in ok.stdout

        wrong = cli("publish", "calculator", "add 3 and 4", "--timeout", "5", env={**env, **bad})
        assert wrong.returncode == 1
        assert wrong.stderr.count("\n") == 1, wrong.stderr
        assert "error: NATS rejected the credentials" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    logs = log_path.read_text() + ok.stderr + wrong.stderr
    assert "worker stopped" in logs
    for secret in (PASSWORD, TOKEN):
        assert secret not in logs


def test_worker_with_wrong_credentials_exits_with_one_clear_line(
    secured: tuple[EmbeddedNats, dict[str, str], dict[str, str]],
    make_settings,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    server, _, bad = secured
    settings: Settings = make_settings("sqlite", nats_url=server.url)
    result = subprocess.run(
        [*cli_args("worker")],
        env={**settings_env(settings), **bad},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: NATS rejected the credentials" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr and TOKEN not in result.stderr


def cli_args(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", *args]
