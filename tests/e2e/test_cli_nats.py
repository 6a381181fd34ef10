"""`agentledger nats` never kills what it did not start, and never runs on silently with a
dead server. (Before: a second `agentledger nats` or `agentledger demo` in the same folder
SIGKILLed the first one's server, which went on printing nothing with a zombie child.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentledger.infra.nats_server import free_port
from support.harness import REPO_ROOT, wait_for

pytestmark = pytest.mark.slow

AGENTLEDGER = str(Path(sys.executable).with_name("agentledger"))


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    env["AGENTLEDGER_DATA_DIR"] = str(folder / ".agentledger")
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    return env


def _answers_as_nats(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


def _server_pid(folder: Path) -> int:
    return int((folder / ".agentledger" / "nats" / "nats-server.pid").read_text())


class NatsCommand:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.log = folder / f"nats-{port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [AGENTLEDGER, "nats", "--port", str(port)],
                cwd=folder,
                env=_env(folder),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def running() -> bool:
            assert self.process.poll() is None, self.log.read_text()
            return "nats-server running at" in self.log.read_text()

        wait_for(running, 30, "agentledger nats to start")

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def first(tmp_path: Path) -> Iterator[NatsCommand]:
    command = NatsCommand(tmp_path, free_port())
    yield command
    if command.process.poll() is None:
        command.process.terminate()
        command.process.wait(30)


def test_a_second_nats_in_the_same_folder_refuses_and_leaves_the_first_running(
    first: NatsCommand, tmp_path: Path
) -> None:
    server_pid = _server_pid(tmp_path)
    second = subprocess.run(
        [AGENTLEDGER, "nats", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1, second.stderr
    assert second.stderr.startswith("error: a nats-server (pid")
    assert f"AGENTLEDGER_NATS_URL=nats://127.0.0.1:{first.port}" in second.stderr

    # The demo in the same folder also leaves it alone and uses a folder of its own.
    demo = subprocess.run(
        [AGENTLEDGER, "demo"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "nats-demo" in demo.stdout

    assert first.process.poll() is None
    assert _server_pid(tmp_path) == server_pid
    assert _answers_as_nats(first.port)
    first.process.terminate()
    assert first.process.wait(30) == 0


def test_nats_exits_with_an_error_when_its_server_dies(first: NatsCommand, tmp_path: Path) -> None:
    os.kill(_server_pid(tmp_path), signal.SIGKILL)
    assert first.process.wait(30) == 1
    assert "error: nats-server (port" in first.output()
    assert "exited unexpectedly" in first.output()


def test_the_orphan_of_a_killed_nats_command_is_stopped_by_the_next_one(
    first: NatsCommand, tmp_path: Path
) -> None:
    orphan = _server_pid(tmp_path)
    first.process.kill()  # the command dies; its server (own session) lives on
    first.process.wait(30)
    assert _answers_as_nats(first.port)

    again = NatsCommand(tmp_path, first.port)
    try:
        assert _server_pid(tmp_path) != orphan
        assert not Path(f"/proc/{orphan}").exists()
        assert _answers_as_nats(first.port)
    finally:
        again.process.terminate()
        again.process.wait(30)


def test_nats_prints_its_monitoring_port_and_honours_host(tmp_path: Path) -> None:
    command = NatsCommand(tmp_path, free_port())
    try:
        output = command.output()
        assert f"listening on 127.0.0.1:{command.port}" in output
        assert "monitoring http://127.0.0.1:" in output
    finally:
        command.process.terminate()
        command.process.wait(30)


def test_sigterm_right_after_start_leaves_no_server_behind(tmp_path: Path) -> None:
    # Before: a SIGTERM in the moment between "running" and the signal handlers killed
    # the command and orphaned its server (own session, still holding the port).
    for attempt in range(3):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        command = NatsCommand(folder, free_port())
        server_pid = _server_pid(folder)
        command.process.terminate()
        command.process.wait(30)

        def gone(pid: int = server_pid) -> bool:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                return True
            return state == "Z"

        wait_for(gone, 15, "the server to stop")
