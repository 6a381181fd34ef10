"""The README's "Bring your own agents" section, run literally from an empty folder.

The files and commands are read out of README.md, so the README cannot drift from what
works. No PYTHONPATH: the catalog's own folder is where its references are imported from.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harness import REPO_ROOT, wait_for

pytestmark = pytest.mark.slow

AGENTLEDGER = str(Path(sys.executable).with_name("agentledger"))


def _section() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("## Bring your own agents")
    return readme[start : readme.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def _write_files_from_the_readme(folder: Path) -> None:
    (python_block,) = _blocks("python")
    (toml_block, *_) = _blocks("toml")
    module = re.match(r"# (\S+)", python_block)
    assert module is not None and module.group(1) == "mycompany/agents.py"
    (folder / "mycompany").mkdir()
    (folder / "mycompany" / "__init__.py").write_text("")
    (folder / "mycompany" / "agents.py").write_text(python_block)
    assert toml_block.startswith("# catalog.toml\n")
    (folder / "catalog.toml").write_text(toml_block)


def _commands_from_the_readme() -> list[tuple[dict[str, str], list[str]]]:
    """Each shell line as (environment assignments, argv), comments and `&` dropped."""
    (shell,) = _blocks("bash")
    commands = []
    for line in shell.splitlines():
        words = shlex.split(line.partition("#")[0].replace("&", " "))
        env = {}
        while words and "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        commands.append((env, words))
    return commands


@pytest.fixture
def user_folder(tmp_path: Path, nats_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    folder = tmp_path / "myproject"
    folder.mkdir()
    _write_files_from_the_readme(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLEDGER_", "PYTHON"))}
    # The README's own `agentledger nats` would take port 4222; the test's server stands in.
    env["AGENTLEDGER_NATS_URL"] = nats_url
    env["AGENTLEDGER_SUBJECT_PREFIX"] = "byo" + uuid.uuid4().hex[:8]
    yield folder, env


def test_the_readme_example_runs_from_a_folder_holding_only_a_module_and_a_catalog(
    user_folder: tuple[Path, dict[str, str]],
) -> None:
    folder, env = user_folder
    nats_cmd, worker_cmd, publish_cmd = _commands_from_the_readme()
    assert nats_cmd[1] == ["agentledger", "nats"]
    assert worker_cmd[1] == ["agentledger", "worker"]
    assert publish_cmd[1][:2] == ["agentledger", "publish"]

    log = folder / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [AGENTLEDGER, *worker_cmd[1][1:]],
            cwd=folder,
            env={**env, **worker_cmd[0]},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def started() -> bool:
            assert worker.poll() is None, log.read_text()
            return b"worker started" in log.read_bytes()

        wait_for(started, 30, "the worker to start")
        result = subprocess.run(
            [AGENTLEDGER, *publish_cmd[1][1:], "--json"],
            cwd=folder,
            env={**env, **publish_cmd[0]},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr + log.read_text()
    assert '"status": "completed"' in result.stdout
    assert "We are on it." in result.stdout


def start_worker_expecting_one_error(
    folder: Path, env: dict[str, str]
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """`agentledger worker` on the folder's catalog: it must exit 1 with one error line."""
    result = subprocess.run(
        [AGENTLEDGER, "worker"],
        cwd=folder,
        env={**env, "AGENTLEDGER_CATALOG": "catalog.toml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors, result


def test_a_bad_reference_stops_the_worker_at_start_with_one_clear_error(
    user_folder: tuple[Path, dict[str, str]],
) -> None:
    folder, env = user_folder
    catalog = folder / "catalog.toml"
    catalog.write_text(
        catalog.read_text()
        + '\n[agents.typo]\nref = "mycompany.agentz:support_agent"\n'
        + '\n[agents.missing]\nref = "mycompany.agents:no_such_agent"\n'
    )
    errors, result = start_worker_expecting_one_error(folder, env)
    assert "catalog catalog.toml" in errors[0]
    assert "agent 'missing': 'mycompany.agents' has no attribute 'no_such_agent'" in errors[0]
    assert "agent 'typo': cannot import 'mycompany.agentz'" in errors[0]
    assert "worker started" not in result.stderr + result.stdout


def test_an_invalid_graph_stops_the_worker_at_start_naming_the_graph(
    user_folder: tuple[Path, dict[str, str]],
) -> None:
    folder, env = user_folder
    (folder / "mycompany" / "flows.py").write_text(
        "from pydantic_graph import GraphBuilder, StepContext\n"
        "unbuilt = GraphBuilder(input_type=int, output_type=int)\n"
        "g = GraphBuilder(input_type=int, output_type=int)\n"
        "@g.step\n"
        "def double(ctx: StepContext[None, None, int]) -> int:\n"
        "    return ctx.inputs * 2\n"
        "g.add(g.edge_from(g.start_node).to(double), g.edge_from(double).to(g.end_node))\n"
        "sync_steps = g.build()\n"
    )
    catalog = folder / "catalog.toml"
    catalog.write_text(
        catalog.read_text()
        + '\n[graphs.unbuilt]\nref = "mycompany.flows:unbuilt"\n'
        + '\n[graphs.sync]\nref = "mycompany.flows:sync_steps"\n'
    )
    errors, result = start_worker_expecting_one_error(folder, env)
    assert "graph 'sync': 'mycompany.flows:sync_steps': step 'double' is not an async" in errors[0]
    assert "graph 'unbuilt': 'mycompany.flows:unbuilt' is a GraphBuilder" in errors[0]
    assert "worker started" not in result.stderr + result.stdout
