"""Graph entries of the catalog: names that cannot be graph names are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentledger.handlers.catalog import Catalog, CatalogError


@pytest.mark.parametrize("name", ["resume", "cancel", "a.b", "with space"])
def test_a_graph_name_that_is_not_one_free_subject_token_is_refused(
    tmp_path: Path, name: str
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'[graphs."{name}"]\nref = "support.sample_graphs:fan_graph"\n')
    with pytest.raises(CatalogError, match=f"graph '{name}' cannot be a graph's name"):
        Catalog.load(catalog)


def test_max_steps_must_be_a_positive_integer(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[graphs.fan]\nref = "support.sample_graphs:fan_graph"\nmax_steps = 0\n')
    with pytest.raises(CatalogError, match="max_steps must be a positive integer"):
        Catalog.load(catalog)
