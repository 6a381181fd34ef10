"""An agent's `[agents.<name>.middleware]` table in the catalog (`MiddlewareSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentledger.domain.errors import first_problem
from agentledger.domain.tools.policies import MiddlewareSpec
from agentledger.handlers.recording import ToolCallError
from agentledger.handlers.refs import CatalogError
from agentledger.handlers.tools.middleware import exception_class

__all__ = ["middleware_spec"]


def middleware_spec(path: Path, agent: str, value: Any) -> MiddlewareSpec | None:
    """The agent's middleware (None when it has none); a bad table is a `CatalogError`
    naming the agent and the field, and so is a `retry.on` class that does not import."""
    if value is None:
        return None
    where = f"catalog {path}: agent {agent!r}: middleware"
    if not isinstance(value, dict):
        raise CatalogError(f"{where} must be a table")
    try:
        spec = MiddlewareSpec.model_validate(value)
    except ValidationError as e:
        raise CatalogError(f"{where}: {first_problem(e, 'middleware')}") from None
    for policy in (spec, *spec.tools.values()):
        for name in policy.retry.on if policy.retry else ():
            try:
                exception_class(name)
            except ToolCallError as e:
                raise CatalogError(f"{where}: {e}") from None
    return None if spec.is_empty() and not spec.tools else spec
