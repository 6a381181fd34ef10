"""Catalog references: `package.module:attribute`, imported on demand."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agentledger.domain.errors import first_problem

__all__ = ["CatalogError", "agent_table", "load_ref"]

M = TypeVar("M", bound=BaseModel)


class CatalogError(Exception):
    """The catalog file or one of its references is wrong."""


_RENAMED_TOP_LEVEL = frozenset({"catalog", "domain", "handlers", "infra", "projections"})
"""Packages that agentledger 0.1 installed at the top level; since 0.2 they are
`agentledger.<name>`. References written before (history files, exported catalogs) still
resolve: when such a top-level module does not exist, the `agentledger.` one is used."""


def _import_ref_module(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        top = module_name.partition(".")[0]
        if top in _RENAMED_TOP_LEVEL and e.name == top:
            return importlib.import_module(f"agentledger.{module_name}")
        raise


def load_ref(ref: str) -> Any:
    """The object `ref` names; a `CatalogError` saying what is wrong otherwise."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise CatalogError(f"catalog reference {ref!r} must look like 'package.module:attribute'")
    try:
        module = _import_ref_module(module_name)
    except ImportError as e:
        raise CatalogError(f"cannot import {module_name!r} for {ref!r}: {e}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise CatalogError(f"{module_name!r} has no attribute {attribute!r}") from None


def agent_table(path: Path, agent: str, key: str, value: Any, model: type[M]) -> M | None:
    """An agent's `[agents.<agent>.<key>]` table as `model` (None when absent); anything
    else is a `CatalogError` naming the catalog, the agent and the field."""
    if value is None:
        return None
    where = f"catalog {path}: agent {agent!r}: {key}"
    if not isinstance(value, dict):
        raise CatalogError(f"{where} must be a table")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise CatalogError(f"{where}: {first_problem(e, key)}") from None
