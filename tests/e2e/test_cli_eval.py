"""`agentledger eval` as a user runs it on the embedded defaults: the example dataset's
report and HTML, a deliberate regression found by `eval compare`, and an offline
evaluation of the recorded runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.harness import REPO_ROOT

pytestmark = pytest.mark.slow


def _cli(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLEDGER_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    env["AGENTLEDGER_DATA_DIR"] = str(cwd / ".agentledger")
    return subprocess.run(
        [sys.executable, "-c", "from agentledger.handlers.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_eval_run_compare_and_history_on_the_example_dataset(tmp_path: Path) -> None:
    datasets = _cli(tmp_path, "eval", "datasets", "--json")
    assert datasets.returncode == 0, datasets.stderr
    smoke = next(d for d in json.loads(datasets.stdout) if d["name"] == "smoke")
    assert smoke["cases"] >= 20

    first = _cli(tmp_path, "eval", "run", "smoke", "--task-id", "ev-v1", "--label", "v1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "24/24 passed (100.0%)" in first.stdout
    assert "thresholds met" in first.stdout
    html = tmp_path / ".agentledger" / "reports" / "ev-v1.html"
    assert html.exists() and html.read_text().count("<svg") == 4

    second = _cli(
        tmp_path,
        "eval",
        "run",
        "smoke",
        "--task-id",
        "ev-v2",
        "--label",
        "v2",
        "--agent",
        "calculator=calculator_v2",
        "--json",
    )
    assert second.returncode == 1, second.stdout + second.stderr  # thresholds missed
    report = json.loads(second.stdout)
    assert report["summary"]["passed"] == 21 and report["thresholds_met"] is False
    assert report["breaches"] == ["pass rate 87.5% < 90.0%"]

    compared = _cli(tmp_path, "eval", "compare", "ev-v1", "ev-v2")
    assert compared.returncode == 0, compared.stderr
    assert "3 regression(s), 0 improvement(s)" in compared.stdout
    for case in ("times", "product", "times-zero"):
        assert case in compared.stdout

    listed = _cli(tmp_path, "eval", "list", "--json")
    assert [row["task_id"] for row in json.loads(listed.stdout)] == ["ev-v2", "ev-v1"]

    history = _cli(
        tmp_path, "eval", "history", "--agent", "calculator", "--dataset", "smoke", "--json"
    )
    assert history.returncode == 0, history.stderr
    offline = json.loads(history.stdout)
    assert offline["runs_scored"] == 10 and offline["agent_model_calls"] == 0
    assert offline["summary"]["passed"] == 10
