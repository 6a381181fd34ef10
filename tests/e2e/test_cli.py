"""The CLI as a user runs it: real processes, the embedded defaults, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentledger.handlers.cli import app
from support.harness import REPO_ROOT

COMMANDS = [
    "demo",
    "worker",
    "project",
    "publish",
    "query",
    "events",
    "state",
    "rebuild",
    "nats",
    "schema",
    "replay",
    "fork",
    "export",
    "import",
    "archive",
    "store-size",
    "dead",
    "dead list",
    "dead show",
    "dead retry",
    "workflow",
    "workflow show",
    "workflow messages",
    "workflow list",
    "tool",
    "tool resolve",
    "dashboard",
    "eval",
    "eval run",
    "eval show",
    "eval list",
    "eval datasets",
    "eval compare",
    "eval history",
    "eval replay",
]


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    env["AGENTLEDGER_DATA_DIR"] = str(cwd / ".agentledger")
    return env


def _cli(
    cwd: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", *args],
        cwd=cwd,
        env={**_env(cwd), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "--help" in result.output


@pytest.fixture(scope="module")
def demo_dir(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    cwd = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    result = _cli(cwd, "demo")
    return cwd, result, time.monotonic() - started


def test_demo_runs_on_embedded_defaults_and_shows_everything(
    demo_dir: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    cwd, result, seconds = demo_dir
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert seconds < 60
    assert "started nats-server" in out and "event store: sqlite" in out
    for heading in (
        "Demo outcomes",
        "Conversation demo-session",
        "Metrics per agent",
        "Event timeline",
        "Routing, memory and tool middleware",
    ):
        assert heading in out
    assert "route arithmetic (hybrid" in out and "The result is 42.0." in out
    assert "user: remember the deploy is on Friday" in out
    # The forecaster asked twice for Oslo: the second call is served from the cache.
    assert "decisions: none (the tool ran)" in out and "decisions: cache_hit" in out
    assert out.count("completed") >= 7
    assert "You told me: the deploy is on Friday; the DB password rotates monthly." in out
    assert "ToolCallFinished" in out and "RunCompleted" in out
    # One workflow: a broadcast to three agents, merged by a fourth, and its diagram.
    assert "Workflow opinions 'a four-day week' -> completed: 3 views." in out
    assert "p1->>p2: broadcast: a four-day week" in out
    assert out.count("-->>p1: response:") == 4
    assert (cwd / ".agentledger" / "ledger.db").exists()


def test_inspection_commands_after_demo(
    demo_dir: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    cwd, result, _ = demo_dir
    assert result.returncode == 0, result.stderr
    runs = json.loads(_cli(cwd, "query", "runs", "--json").stdout)
    # 8 tasks, 1 routed, and the 4 child runs of the demo's workflow
    assert len(runs) == 13 and {r["status"] for r in runs} == {"completed"}
    workflows = json.loads(_cli(cwd, "workflow", "list", "--json").stdout)
    assert [(w["graph"], w["status"], w["children_dispatched"]) for w in workflows] == [
        ("opinions", "completed", 4)
    ]
    calc = next(r for r in runs if r["agent"] == "calculator")
    page = _cli(cwd, "query", "runs", "--limit", "2", "--offset", "1", "--json").stdout
    assert json.loads(page) == runs[1:3]
    snapshots = json.loads(_cli(cwd, "query", "snapshots", "--limit", "1", "--json").stdout)
    assert len(snapshots) == 1 and snapshots[0]["kind"] == "session"

    events = json.loads(_cli(cwd, "events", calc["task_id"], "--json").stdout)
    names = [e["name"] for e in events]
    assert names[0] == "RunRequested" and names[-1] == "RunCompleted"
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))

    state = json.loads(_cli(cwd, "state", calc["task_id"], "--at-version", "1", "--json").stdout)
    assert state["version"] == 1 and state["status"] == "running" and state["requests"] == 0
    final = json.loads(_cli(cwd, "state", calc["task_id"], "--json").stdout)
    assert final["status"] == "completed" and final["requests"] == 2

    session = next(r["session_id"] for r in runs if r["agent"] == "notes")
    conversation = json.loads(
        _cli(cwd, "query", "conversation", "--session", session, "--json").stdout
    )
    assert [t["turn"] for t in conversation["turns"]] == [1, 2, 3]

    metrics_before = _cli(cwd, "query", "metrics", "--json").stdout
    rebuilt = _cli(cwd, "rebuild", "all")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "runs: " in rebuilt.stdout and "refolded" in rebuilt.stdout
    assert json.loads(_cli(cwd, "query", "runs", "--json").stdout) == runs
    assert _cli(cwd, "query", "metrics", "--json").stdout == metrics_before


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("events", "no-such-thing"), {}, "error: no events for 'no-such-thing'"),
        (("query", "bogus"), {}, "error: unknown view 'bogus'"),
        (("rebuild", "bogus"), {}, "error: unknown view 'bogus'"),
        (
            ("worker",),
            {"AGENTLEDGER_WORKER_CONCURRENCY": "lots"},
            "error: invalid setting worker_concurrency",
        ),
        (
            ("worker",),
            {
                "AGENTLEDGER_CATALOG": "/nonexistent.toml",
                "AGENTLEDGER_NATS_URL": "nats://127.0.0.1:1",
            },
            "error: catalog file not found",
        ),
        (
            ("publish", "calculator", "hi", "--timeout", "2"),
            {"AGENTLEDGER_NATS_URL": "nats://127.0.0.1:1"},
            "error: cannot reach NATS",
        ),
    ],
    ids=[
        "unknown-id",
        "unknown-view",
        "unknown-rebuild",
        "bad-setting",
        "missing-catalog",
        "no-nats",
    ],
)
def test_errors_are_one_clear_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = _cli(tmp_path, *args, timeout=60, **env)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_schema_writes_the_contract(tmp_path: Path) -> None:
    result = _cli(tmp_path, "schema", "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    run_agent = json.loads((tmp_path / "c" / "RunAgent.schema.json").read_text())
    assert set(run_agent["required"]) == {"task_id", "agent", "prompt"}
    asyncapi = json.loads((tmp_path / "c" / "asyncapi.json").read_text())
    assert asyncapi["asyncapi"].startswith("3.")
    channels = json.dumps(asyncapi["channels"])
    assert "ledger.tasks.run.{agent}" in channels and "ledger.results.{task_id}" in channels
