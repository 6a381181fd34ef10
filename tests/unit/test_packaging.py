"""The distribution installs every layer folder as `agentledger.<layer>`."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("catalog", "domain", "handlers", "infra", "projections")


def _setuptools_config() -> dict[str, object]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    config: dict[str, object] = data["tool"]["setuptools"]
    return config


def test_every_package_folder_is_listed_under_its_agentledger_name() -> None:
    # A subpackage missing from the explicit list would be absent from the wheel and only
    # fail for users of a normal install (editable installs find it anyway).
    on_disk = {
        "agentledger." + ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for layer in LAYERS
        for init in (REPO_ROOT / layer).rglob("__init__.py")
    }
    assert on_disk >= {f"agentledger.{layer}" for layer in LAYERS}
    assert set(_setuptools_config()["packages"]) == on_disk  # type: ignore[arg-type]


def test_each_layer_maps_to_its_top_level_folder() -> None:
    package_dir = _setuptools_config()["package-dir"]
    assert package_dir == {f"agentledger.{layer}": layer for layer in LAYERS}


def test_the_test_only_postgres_launcher_is_not_in_the_runtime_package() -> None:
    assert not (REPO_ROOT / "infra" / "postgres_server.py").exists()
    assert (REPO_ROOT / "tests" / "support" / "postgres_server.py").exists()
