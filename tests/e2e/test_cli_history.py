"""The history commands as a user runs them, on the demo's embedded defaults: replay
(and its exit status), export, import, fork, store-size and archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import _cli

from support.harness import REPO_ROOT


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A directory where the demo ran, its calculator task id and its notes session id."""
    cwd = tmp_path_factory.mktemp("history")
    result = _cli(cwd, "demo")
    assert result.returncode == 0, result.stderr
    runs = json.loads(_cli(cwd, "query", "runs", "--json").stdout)
    calc = next(r["task_id"] for r in runs if r["prompt"] == "add 17 and 25")
    session = next(r["session_id"] for r in runs if r["agent"] == "notes")
    return cwd, calc, session


def _edited_catalog(directory: Path) -> dict[str, str]:
    path = directory / "edited.toml"
    path.write_text(
        (REPO_ROOT / "catalog" / "example.toml")
        .read_text()
        .replace(
            "agentledger.catalog.example_agents:calculator",
            "support.replay_agents:calculator_reworded",
        )
    )
    return {
        "AGENTLEDGER_CATALOG": str(path),
        "PYTHONPATH": str(REPO_ROOT / "tests"),
    }


def test_replay_prints_identical_or_the_divergence_and_exits_accordingly(
    recorded: tuple[Path, str, str],
) -> None:
    cwd, calc, session = recorded
    same = _cli(cwd, "replay", calc)
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == "identical"

    whole = _cli(cwd, "replay", session, "--json")
    assert whole.returncode == 0, whole.stderr
    assert [r["verdict"] for r in json.loads(whole.stdout)] == ["identical"] * 3

    by_agent = _cli(cwd, "replay", "--agent", "calculator", "--json")
    assert by_agent.returncode == 0, by_agent.stderr
    # The demo's two calculator tasks and its routed task (a calculator run too).
    replayed = json.loads(by_agent.stdout)
    assert [r["agent"] for r in replayed] == ["calculator"] * 3
    assert {r["verdict"] for r in replayed} == {"identical"}
    edited_all = _cli(
        cwd, "replay", "--agent", "calculator", "--limit", "1", **_edited_catalog(cwd)
    )
    assert edited_all.returncode == 2 and "diverged at event 2" in edited_all.stdout

    edited = _cli(cwd, "replay", calc, **_edited_catalog(cwd))
    assert edited.returncode == 2, edited.stderr
    assert "diverged at event 2: ModelRequestSent differs in message.instructions" in edited.stdout
    assert "You are a careful calculator" in edited.stdout


def test_export_replay_from_file_and_import_into_another_store(
    recorded: tuple[Path, str, str], tmp_path: Path
) -> None:
    cwd, _, session = recorded
    out = tmp_path / "session.json"
    exported = _cli(cwd, "export", session, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "wrote 24 events of 4 aggregates" in exported.stdout
    document = json.loads(out.read_text())
    assert document["format"] == "agentledger-history" and document["format_version"] == 1

    from_file = _cli(tmp_path, "replay", "--file", str(out))
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.count("identical") == 3

    other = tmp_path / "other"
    other.mkdir()
    imported = _cli(other, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "24 events imported, 0 already present" in imported.stdout
    again = _cli(other, "import", str(out), "--json")
    assert json.loads(again.stdout)[0]["skipped_events"] == 24
    replayed = _cli(other, "replay", session)
    assert replayed.returncode == 0, replayed.stderr


def test_fork_continues_live_as_a_linked_run(recorded: tuple[Path, str, str]) -> None:
    cwd, calc, _ = recorded
    forked = _cli(cwd, "fork", calc, "--at", "7", "--prompt", "multiply 3 and 5", "--json")
    assert forked.returncode == 0, forked.stderr
    result = json.loads(forked.stdout)
    assert result["at"] == 7 and result["outcome"]["output"] == "The result is 15.0."
    events = json.loads(_cli(cwd, "events", result["task_id"], "--json").stdout)
    assert events[0]["data"]["parent_run_id"] == result["parent_run_id"]
    assert events[0]["data"]["fork_at"] == 7
    assert _cli(cwd, "replay", result["task_id"]).stdout.strip() == "identical"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("replay",), "error: give a run, task or session id, --file or --agent"),
        (("replay", "--file", "nope.json"), "error: no such file: nope.json"),
        (("fork", "{calc}", "--at", "99"), "error: fork point 99 is outside 1..7"),
        (("fork", "{calc}", "--at", "4"), "error: fork point 4 splits tool call"),
        (("export", "no-such-run"), "error: no events for 'no-such-run'"),
        (("archive",), "error: give --older-than-days or set AGENTLEDGER_RETENTION_DAYS"),
    ],
    ids=[
        "replay-nothing",
        "replay-no-file",
        "fork-outside",
        "fork-split",
        "export-unknown",
        "archive-no-policy",
    ],
)
def test_history_command_errors_are_one_clear_line(
    recorded: tuple[Path, str, str], args: tuple[str, ...], message: str
) -> None:
    cwd, calc, _ = recorded
    result = _cli(cwd, *(a.format(calc=calc) for a in args))
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_bad_history_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "agentledger-history", "format_version": 5}')
    result = _cli(tmp_path, "replay", "--file", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {bad} has format_version 5"), result.stderr


def test_store_size_then_archive_then_replay_points_at_the_archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cwd = tmp_path_factory.mktemp("archive")
    assert _cli(cwd, "demo").returncode == 0
    runs = json.loads(_cli(cwd, "query", "runs", "--json").stdout)
    calc = next(r["task_id"] for r in runs if r["prompt"] == "add 17 and 25")
    sizes = {s["aggregate_type"]: s for s in json.loads(_cli(cwd, "store-size", "--json").stdout)}
    # 8 tasks, 1 routed, 4 children of the demo's workflow (and the workflow's GraphRun)
    assert sizes["AgentRun"]["aggregates"] == 13 and sizes["Conversation"]["aggregates"] == 2
    assert sizes["GraphRun"]["aggregates"] == 1
    assert sizes["RouteDecision"]["aggregates"] == 1  # the demo's routed task
    table = _cli(cwd, "store-size").stdout
    assert "AgentRun" in table and "total" in table

    dry = json.loads(_cli(cwd, "archive", "--older-than-days", "0", "--dry-run", "--json").stdout)
    assert dry["candidates"] == 13 and dry["archived_runs"] == 0
    archived = _cli(cwd, "archive", "--json", AGENTLEDGER_RETENTION_DAYS="0")  # the policy
    assert archived.returncode == 0, archived.stderr
    report = json.loads(archived.stdout)
    assert report["archived_runs"] + len(report["kept"]) == 13 and len(report["files"]) == 1
    assert json.loads(_cli(cwd, "query", "runs", "--json").stdout) == runs  # views untouched

    gone = _cli(cwd, "replay", calc)
    assert gone.returncode == 1
    assert f"was archived to {report['files'][0]}" in gone.stderr
    from_archive = _cli(cwd, "replay", "--file", report["files"][0])
    assert from_archive.returncode == 0, from_archive.stderr
