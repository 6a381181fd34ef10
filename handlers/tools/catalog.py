"""An agent's `[agents.<name>.middleware]` table in the catalog (`MiddlewareSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentledger.domain.tools.policies import MiddlewareSpec
from agentledger.handlers.recording import ToolCallError
from agentledger.handlers.refs import CatalogError, agent_table
from agentledger.handlers.tools.middleware import exception_class

__all__ = ["middleware_spec"]


def middleware_spec(path: Path, agent: str, value: Any) -> MiddlewareSpec | None:
    """The agent's middleware (None when it has none); a bad table is a `CatalogError`
    naming the agent and the field, and so is a `retry.on` class that does not import."""
    spec = agent_table(path, agent, "middleware", value, MiddlewareSpec)
    if spec is None:
        return None
    where = f"catalog {path}: agent {agent!r}: middleware"
    for policy in (spec, *spec.tools.values()):
        for name in policy.retry.on if policy.retry else ():
            try:
                exception_class(name)
            except ToolCallError as e:
                raise CatalogError(f"{where}: {e}") from None
    return None if spec.is_empty() and not spec.tools else spec
