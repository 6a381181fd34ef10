"""The catalog's datasets: `[datasets.<name>]` tables naming pydantic-evals dataset
files (YAML or JSON), and loading them as the cases an evaluation runs.

```toml
[datasets.smoke]
path = "datasets/smoke.yaml"      # relative to the catalog file
agent = "calculator"              # a case's agent unless its metadata names one
description = "..."
concurrency = 4                   # cases in flight at once (default: the setting)
evaluators = ["mypkg.evals:Polite"]   # custom evaluator classes the file may use
[datasets.smoke.thresholds]       # when the evaluation passes (domain/evaluation/scores)
pass_rate = 0.9
```

A dataset file is pydantic-evals' format: `cases` (each with `name`, `inputs` — the
prompt, a string —, `expected_output`, `metadata`, `evaluators`) and dataset-wide
`evaluators`. A case runs on `metadata.agent`, else on the dataset's `agent`. Every case
needs a name, unique in the file (they are how two evaluations are compared).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_evals import Dataset
from pydantic_evals.evaluators import Evaluator

from agentledger.domain.errors import first_problem
from agentledger.domain.evaluation.scores import Thresholds
from agentledger.domain.evaluation.tasks import MAX_CONCURRENCY
from agentledger.domain.tasks import ID_PATTERN
from agentledger.handlers.evaluation.evaluators import BUILT_IN
from agentledger.handlers.refs import CatalogError, load_ref

__all__ = [
    "CaseSpec",
    "DatasetEntry",
    "DatasetInvalid",
    "LoadedDataset",
    "catalog_datasets",
    "dataset_entries",
    "load_dataset",
]

MAX_CASES = 10_000
MAX_FILE_BYTES = 32 * 1024 * 1024


class DatasetInvalid(ValueError):
    """The dataset file cannot be evaluated (missing, unreadable, or bad cases)."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    agent: str | None = Field(default=None, pattern=ID_PATTERN)
    description: str = ""
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    evaluators: list[str] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    """One `[datasets.<name>]` table."""

    name: str
    path: Path
    agent: str | None = None
    description: str = ""
    concurrency: int | None = None
    evaluators: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, kw_only=True)
class CaseSpec:
    """A case as an evaluation records it."""

    name: str
    agent: str
    prompt: str
    expected_output: Any
    metadata: dict[str, Any]

    def as_json(self, task_id: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "agent": self.agent,
            "prompt": self.prompt,
            "expected_output": self.expected_output,
            "metadata": self.metadata,
            "task_id": task_id,
        }


@dataclass(frozen=True, kw_only=True)
class LoadedDataset:
    entry: DatasetEntry
    cases: list[CaseSpec]
    evaluators: list[Evaluator[Any, Any, Any]]
    """The dataset-wide evaluators."""
    case_evaluators: dict[str, list[Evaluator[Any, Any, Any]]]
    digest: str
    """sha256 of the file's bytes (what an evaluation was run on)."""

    def evaluators_for(self, case: str) -> list[Evaluator[Any, Any, Any]]:
        return [*self.evaluators, *self.case_evaluators.get(case, [])]

    def evaluator_names(self) -> list[str]:
        names = [e.get_default_evaluation_name() for e in self.evaluators]
        for extra in self.case_evaluators.values():
            names += [e.get_default_evaluation_name() for e in extra]
        return list(dict.fromkeys(names))

    def case(self, name: str) -> CaseSpec | None:
        return next((c for c in self.cases if c.name == name), None)


def dataset_entries(path: Path, data: dict[str, Any], agents: set[str]) -> dict[str, DatasetEntry]:
    """The catalog's `[datasets.*]`; a bad table is a `CatalogError` naming it."""
    entries = {}
    for name, table in (data.get("datasets") or {}).items():
        where = f"catalog {path}: dataset {name!r}"
        if not re.fullmatch(ID_PATTERN.strip("^$"), name):
            raise CatalogError(f"{where}: a dataset name is letters, digits, '_', '-', ':'")
        if not isinstance(table, dict):
            raise CatalogError(f"{where} must be a table")
        try:
            spec = _Table.model_validate(table)
        except ValidationError as e:
            raise CatalogError(f"{where}: {first_problem(e, 'dataset')}") from None
        if spec.agent is not None and spec.agent not in agents:
            raise CatalogError(f"{where}: no agent {spec.agent!r} in the catalog")
        file = Path(spec.path)
        entries[name] = DatasetEntry(
            name=name,
            path=file if file.is_absolute() else path.parent / file,
            agent=spec.agent,
            description=spec.description,
            concurrency=spec.concurrency,
            evaluators=tuple(spec.evaluators),
            thresholds=spec.thresholds,
        )
    return entries


def catalog_datasets(path: Path) -> dict[str, DatasetEntry]:
    """The datasets of the catalog at `path`, read from the TOML alone."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"catalog {path} is not valid TOML: {e}") from None
    return dataset_entries(path, data, set(data.get("agents") or {}))


def _custom_types(entry: DatasetEntry) -> list[type[Evaluator[Any, Any, Any]]]:
    found: list[type[Evaluator[Any, Any, Any]]] = list(BUILT_IN)
    for ref in entry.evaluators:
        try:
            obj = load_ref(ref)
        except CatalogError as e:
            raise DatasetInvalid(f"dataset {entry.name!r}: evaluator {ref!r}: {e}") from None
        if not (isinstance(obj, type) and issubclass(obj, Evaluator)):
            raise DatasetInvalid(
                f"dataset {entry.name!r}: {ref!r} is not a pydantic-evals Evaluator class"
            )
        found.append(obj)
    return found


def load_dataset(entry: DatasetEntry, agents: set[str] | None = None) -> LoadedDataset:
    """Read and check the dataset file; `DatasetInvalid` says what is wrong."""
    try:
        raw = entry.path.read_bytes()
    except OSError as e:
        raise DatasetInvalid(f"dataset {entry.name!r}: cannot read {entry.path}: {e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DatasetInvalid(f"dataset {entry.name!r}: {entry.path} is over {MAX_FILE_BYTES} bytes")
    fmt: Literal["json", "yaml"] = "json" if entry.path.suffix.lower() == ".json" else "yaml"
    try:
        dataset = Dataset[Any, Any, Any].from_text(
            raw.decode("utf-8"),
            fmt=fmt,
            custom_evaluator_types=_custom_types(entry),
            default_name=entry.name,
        )
    except DatasetInvalid:
        raise
    except Exception as e:  # pydantic-evals says what is wrong in its own errors
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]  # type: ignore[assignment]
        text = str(e).strip().splitlines()
        raise DatasetInvalid(
            f"dataset {entry.name!r} ({entry.path}): {text[0] if text else type(e).__name__}"
        ) from None
    if len(dataset.cases) > MAX_CASES:
        raise DatasetInvalid(f"dataset {entry.name!r}: more than {MAX_CASES} cases")
    cases: list[CaseSpec] = []
    case_evaluators: dict[str, list[Evaluator[Any, Any, Any]]] = {}
    for index, case in enumerate(dataset.cases):
        name = case.name or f"case-{index + 1}"
        where = f"dataset {entry.name!r}: case {name!r}"
        if any(c.name == name for c in cases):
            raise DatasetInvalid(f"{where}: two cases have this name")
        metadata = case.metadata if isinstance(case.metadata, dict) else {}
        agent = metadata.get("agent") or entry.agent
        if not isinstance(agent, str) or not agent:
            raise DatasetInvalid(f"{where}: no agent (set metadata.agent or the dataset's agent)")
        if agents is not None and agent not in agents:
            raise DatasetInvalid(f"{where}: no agent {agent!r} in the catalog")
        prompt = case.inputs
        if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
            prompt = prompt["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetInvalid(f"{where}: inputs must be the prompt (a non-empty string)")
        cases.append(
            CaseSpec(
                name=name,
                agent=agent,
                prompt=prompt,
                expected_output=case.expected_output,
                metadata=dict(metadata),
            )
        )
        case_evaluators[name] = list(case.evaluators)
    if not cases:
        raise DatasetInvalid(f"dataset {entry.name!r}: it has no cases")
    return LoadedDataset(
        entry=entry,
        cases=cases,
        evaluators=list(dataset.evaluators),
        case_evaluators=case_evaluators,
        digest=hashlib.sha256(raw).hexdigest(),
    )
