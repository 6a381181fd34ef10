"""Catalog datasets: what a bad table or file is told, and the example dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_evals.evaluators import Evaluator, EvaluatorContext

from agentledger.handlers.catalog import Catalog
from agentledger.handlers.evaluation.datasets import (
    DatasetInvalid,
    catalog_datasets,
    dataset_entries,
    load_dataset,
)
from agentledger.handlers.refs import CatalogError

EXAMPLE = Path(__file__).resolve().parents[3] / "catalog" / "example.toml"


@dataclass
class Shouty(Evaluator[object, object, object]):
    """A custom evaluator named by `module:attr` in the catalog."""

    def evaluate(self, ctx: EvaluatorContext[object, object, object]) -> bool:
        return str(ctx.output).isupper()


def test_the_example_dataset_has_at_least_twenty_cases_for_the_catalogs_agents() -> None:
    catalog = Catalog.load(EXAMPLE)
    loaded = load_dataset(catalog.datasets["smoke"], agents=set(catalog.entries))
    assert len(loaded.cases) >= 20
    assert len({c.agent for c in loaded.cases}) >= 5
    assert len({c.name for c in loaded.cases}) == len(loaded.cases)
    assert "Judge" in loaded.evaluator_names()


def _write(tmp_path: Path, toml: str, dataset: str | None = None) -> Path:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[agents.a]\nref = "x:y"\n' + toml)
    if dataset is not None:
        (tmp_path / "d.yaml").write_text(dataset)
    return catalog


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[datasets.d]\nagent = "a"\n', "path: Field required"),
        ('[datasets.d]\npath = "d.yaml"\nagent = "nobody"\n', "no agent 'nobody' in the catalog"),
        ('[datasets.d]\npath = "d.yaml"\nconcurrency = 0\n', "concurrency"),
        ('[datasets.d]\npath = "d.yaml"\nthresholds = { pass_rate = 2 }\n', "pass_rate"),
        ('[datasets."a b"]\npath = "d.yaml"\n', "a dataset name is letters"),
    ],
)
def test_a_bad_dataset_table_is_a_catalog_error_naming_it(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(CatalogError, match="dataset") as raised:
        catalog_datasets(_write(tmp_path, table))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("cases:\n  - name: x\n    inputs: {n: 1}\n", "inputs must be the prompt"),
        ("cases:\n  - name: x\n    inputs: hi\n    metadata: {agent: b}\n", "no agent 'b'"),
        (
            "cases:\n  - name: x\n    inputs: hi\n  - name: x\n    inputs: ho\n",
            "Duplicate case name: 'x'",
        ),
        ("cases: []\n", "it has no cases"),
        (
            "cases:\n  - name: x\n    inputs: hi\n    evaluators: [NoSuchEvaluator]\n",
            "NoSuchEvaluator",
        ),
        ("cases: [", "dataset 'd'"),
    ],
)
def test_a_bad_dataset_file_says_what_is_wrong(tmp_path: Path, dataset: str, message: str) -> None:
    entry = catalog_datasets(
        _write(tmp_path, '[datasets.d]\npath = "d.yaml"\nagent = "a"\n', dataset)
    )["d"]
    with pytest.raises(DatasetInvalid) as raised:
        load_dataset(entry, agents={"a"})
    assert message in str(raised.value)


def test_a_missing_file_and_custom_evaluators(tmp_path: Path) -> None:
    entries = dataset_entries(
        tmp_path / "c.toml",
        {"datasets": {"d": {"path": "gone.yaml", "agent": "a"}}},
        {"a"},
    )
    with pytest.raises(DatasetInvalid, match="cannot read"):
        load_dataset(entries["d"])
    (tmp_path / "d.yaml").write_text("cases:\n  - name: x\n    inputs: hi\nevaluators: [Shouty]\n")
    table = {"path": "d.yaml", "agent": "a", "evaluators": [f"{__name__}:Shouty"]}
    entry = dataset_entries(tmp_path / "c.toml", {"datasets": {"d": table}}, {"a"})["d"]
    assert [type(e).__name__ for e in load_dataset(entry).evaluators] == ["Shouty"]
    bad = dataset_entries(
        tmp_path / "c.toml", {"datasets": {"d": {**table, "evaluators": ["json:dumps"]}}}, {"a"}
    )["d"]
    with pytest.raises(DatasetInvalid, match="is not a pydantic-evals Evaluator class"):
        load_dataset(bad)
