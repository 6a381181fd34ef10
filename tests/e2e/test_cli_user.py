"""The CLI never leaves a user guessing: each case typed as a user types it, in a real
process, against real servers where it needs one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeSettings

from support.harness import REPO_ROOT, settings_env, start_worker_process, wait_for

pytestmark = pytest.mark.slow

AGENTLEDGER = str(Path(sys.executable).with_name("agentledger"))


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    env.update(extra)
    return env


def _run(
    cwd: Path, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTLEDGER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


@pytest.fixture
def worker_env(make_settings: MakeSettings, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real `agentledger worker` on the example catalog; the env that reaches it."""
    env = settings_env(make_settings("sqlite"))
    worker = start_worker_process(env, tmp_path / "worker.log")
    try:
        yield env
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def test_a_duplicate_task_id_prints_a_notice_and_the_earlier_tasks_outcome(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    first = _run(tmp_path, "publish", "calculator", "add 2 and 40", "--task-id", "t-1",
                 "--json", env=worker_env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "notice" not in first.stderr
    assert json.loads(first.stdout)["output"] == "The result is 42.0."

    again = _run(tmp_path, "publish", "calculator", "multiply 6 and 9", "--task-id", "t-1",
                 "--json", env=worker_env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "notice: task id t-1 was already submitted; it is not run again" in again.stderr
    assert "this is the earlier task's outcome" in again.stderr
    assert json.loads(again.stdout)["output"] == "The result is 42.0."

    other_agent = _run(tmp_path, "publish", "greeter", "hello", "--task-id", "t-1", "--json",
                       env=worker_env)  # fmt: skip
    assert "(it ran agent 'calculator', not 'greeter')" in other_agent.stderr
    assert json.loads(other_agent.stdout)["agent"] == "calculator"


def test_publish_with_no_worker_says_what_it_is_waiting_for(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    env = settings_env(make_settings("sqlite"))
    result = _run(tmp_path, "publish", "calculator", "add 1 and 1", "--task-id", "lonely",
                  "--timeout", "4", env=env)  # fmt: skip
    assert result.returncode == 1
    prefix = env["AGENTLEDGER_SUBJECT_PREFIX"]
    assert (
        f"waiting for the outcome of task lonely on {prefix}.results.lonely (no worker is"
        f" taking {prefix}.tasks.run.* tasks; start one with `agentledger worker`"
    ) in " ".join(result.stderr.split())
    assert "error: no outcome for task lonely within 4s; it stays queued" in result.stderr


def test_nats_unreachable_is_one_line_naming_the_url_without_credentials(
    tmp_path: Path,
) -> None:
    refused = _run(tmp_path, "publish", "calculator", "hi",
                   env=_clean_env(AGENTLEDGER_NATS_URL="nats://bob:hunter2@127.0.0.1:1"))  # fmt: skip
    line = _one_error_line(refused)
    assert line == (
        "error: cannot reach NATS at nats://***@127.0.0.1:1 (connection refused); start one"
        " with `agentledger nats` or set AGENTLEDGER_NATS_URL"
    )
    assert "hunter2" not in refused.stderr + refused.stdout

    # A port that accepts but never speaks NATS: the connect timeout (2 s by default).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hung = _run(tmp_path, "publish", "calculator", "hi",
                    env=_clean_env(AGENTLEDGER_NATS_URL=f"nats://127.0.0.1:{port}"))  # fmt: skip
    assert _one_error_line(hung).startswith(
        f"error: cannot reach NATS at nats://127.0.0.1:{port} (no answer within 2s)"
    )


def test_postgres_unreachable_is_one_line_naming_the_database_without_credentials(
    tmp_path: Path,
) -> None:
    dsn = "postgresql://bob:hunter2@127.0.0.1:1/ledger"
    for args in (("query", "runs"), ("events", "x"), ("store-size",)):
        result = _run(tmp_path, *args, env=_clean_env(AGENTLEDGER_POSTGRES_DSN=dsn))
        line = _one_error_line(result)
        assert line.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1/ledger within 2s")
        assert "Connection refused" in line
        assert "hunter2" not in result.stderr
        assert "WARNING" not in result.stderr


def test_query_on_a_fresh_store_answers_empty_and_says_which_store(tmp_path: Path) -> None:
    env = _clean_env()
    runs = _run(tmp_path, "query", "runs", "--json", env=env)
    assert runs.returncode == 0, runs.stderr
    assert json.loads(runs.stdout) == []
    store = tmp_path / ".agentledger" / "ledger.db"
    assert f"store: sqlite {store}" in " ".join(runs.stderr.split())
    metrics = _run(tmp_path, "query", "metrics", "--json", env=env)
    assert metrics.returncode == 0 and json.loads(metrics.stdout) == []
    chosen = _run(tmp_path, "query", "runs", "--json",
                  env=_clean_env(AGENTLEDGER_DATA_DIR=str(tmp_path / "d")))  # fmt: skip
    assert chosen.returncode == 0 and chosen.stderr == ""


def test_version_and_short_help(tmp_path: Path) -> None:
    version = _run(tmp_path, "--version", env=_clean_env())
    assert version.returncode == 0 and version.stdout.startswith("agentledger 0.")
    for args in (("-h",), ("publish", "-h")):
        result = _run(tmp_path, *args, env=_clean_env())
        assert result.returncode == 0 and "Usage" in result.stdout
    # A relative data dir is resolved once, and the help says where it is.
    top = _run(tmp_path, "--help", env=_clean_env(AGENTLEDGER_DATA_DIR="rel/data"))
    assert f"Data dir: {tmp_path}/rel/data (AGENTLEDGER_DATA_DIR" in " ".join(top.stdout.split())


def test_piped_tables_follow_columns(tmp_path: Path) -> None:
    narrow = _run(tmp_path, "query", "runs", env=_clean_env(COLUMNS="40"))
    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stdout.strip() and max(map(len, narrow.stdout.splitlines())) <= 40
    wide = _run(tmp_path, "query", "runs", env=_clean_env(COLUMNS="120"))
    assert max(map(len, wide.stdout.splitlines())) > 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "calculator", "hi", "--task-id", "has space"), "error: invalid --task-id:"),
        (("publish", "calculator", ""), "error: invalid PROMPT:"),
        (("publish", "no.such", "hi"), "error: invalid AGENT:"),
        (("publish", "calculator", "hi", "--request-limit", "0"), "error: invalid --request-limit"),
    ],
    ids=["task-id", "prompt", "agent", "request-limit"],
)
def test_a_validation_error_names_the_flag(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # No server needed: the input is checked before anything connects.
    result = _run(tmp_path, *args, env=_clean_env(AGENTLEDGER_NATS_URL="nats://127.0.0.1:1"))
    assert _one_error_line(result).startswith(message)


def test_a_query_with_no_projector_says_to_start_one(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    env = settings_env(make_settings("sqlite"))
    result = _run(tmp_path, "query", "runs", "--via-nats", env=env)
    prefix = env["AGENTLEDGER_SUBJECT_PREFIX"]
    assert _one_error_line(result) == (
        f"error: no query responder on {prefix}.query.runs: start `agentledger project`"
    )


@pytest.mark.parametrize("command", ["worker", "project"])
def test_sigterm_while_nats_is_gone_stops_cleanly(
    tmp_path: Path, make_settings: MakeSettings, command: str
) -> None:
    from agentledger.infra.nats_server import EmbeddedNats

    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    env = settings_env(make_settings("sqlite", nats_url=server.url))
    log = tmp_path / f"{command}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [AGENTLEDGER, command], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: f"{command if command == 'worker' else 'projector'} started"
                 in log.read_text(), 30, f"{command} to start")  # fmt: skip
        server.stop()  # the process now reconnects, for ever
        threading.Event().wait(1.5)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        server.stop()


def test_in_json_log_mode_the_final_error_and_notices_are_json_too(tmp_path: Path) -> None:
    failed = _run(tmp_path, "publish", "calculator", "hi",
                  env=_clean_env(AGENTLEDGER_LOG_FORMAT="json",
                                 AGENTLEDGER_NATS_URL="nats://127.0.0.1:1"))  # fmt: skip
    assert failed.returncode == 1
    (line,) = failed.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["event"].startswith("cannot reach NATS")
    fresh = _run(tmp_path, "query", "runs", env=_clean_env(AGENTLEDGER_LOG_FORMAT="json"))
    assert [json.loads(x)["event"][:6] for x in fresh.stderr.splitlines()] == ["store:"]
