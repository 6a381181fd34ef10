"""The built wheel, installed into a fresh venv beside a user's own `handlers` and `domain`
packages, runs as a user runs it: `agentledger --version` and `agentledger demo`.

Before the package rename, agentledger installed top-level `handlers`, `domain`, ...; a
user's `handlers` package on the path then broke the CLI (`No module named
'handlers.cli'`). The venv gets the dependencies of the test environment through a
`.pth` line (no network: the wheel itself is installed with `--no-deps`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support.harness import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of the tracked files: an in-tree build would reuse build/ and
    # could package modules that no longer exist.
    source = tmp_path_factory.mktemp("source")
    tracked = _run(
        "git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO_ROOT
    ).stdout.splitlines()
    for name in tracked:
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", out, source,
    )  # fmt: skip
    (built,) = out.glob("agentledger-*.whl")
    return built


def test_the_wheel_holds_only_the_agentledger_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"agentledger"}
    assert "agentledger/catalog/example.toml" in names
    assert "agentledger/domain/py.typed" in names
    # The dashboard's page and its vendored Mermaid (with its license) ship in the wheel.
    for static in ("index.html", "dashboard.js", "mermaid.min.js", "mermaid.LICENSE.txt"):
        assert f"agentledger/handlers/dashboard/static/{static}" in names
    # The test-only PostgreSQL launcher is not part of the runtime package.
    assert not [n for n in names if "postgres_server" in n]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    # Dependencies from this environment, after the venv's own site-packages (so the
    # wheel's agentledger, not an editable one, is what gets imported).
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (site / "zz-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's folder whose own packages are named like agentledger's layers."""
    for name in ("handlers", "domain"):
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(f"WHO = 'the user s {name}'\n")
    return tmp_path


def _user_env(user_project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLEDGER_", "PYTHON"))}
    env["PYTHONPATH"] = str(user_project)
    env["AGENTLEDGER_DATA_DIR"] = str(user_project / ".agentledger")
    return env


def test_version_and_demo_run_beside_user_packages_named_handlers_and_domain(
    venv: Path, user_project: Path
) -> None:
    env = _user_env(user_project)
    agentledger = venv / "bin" / "agentledger"

    version = _run(agentledger, "--version", cwd=user_project, env=env)
    assert version.stdout.strip() == "agentledger 0.2.0"

    # Both live side by side: the user's names stay the user's.
    both = _run(
        venv / "bin" / "python",
        "-c",
        "import handlers, domain, agentledger.handlers.cli as cli;"
        "print(handlers.WHO, domain.WHO, cli.__file__, sep='|')",
        cwd=user_project,
        env=env,
    ).stdout.strip()
    user_handlers, user_domain, cli_file = both.split("|")
    assert (user_handlers, user_domain) == ("the user s handlers", "the user s domain")
    assert cli_file.startswith(str(venv))

    demo = _run(agentledger, "demo", cwd=user_project, env=env)
    assert "Demo outcomes" in demo.stdout
    assert demo.stdout.count("completed") >= 6
