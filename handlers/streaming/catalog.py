"""An agent's `[agents.<name>.stream]` table in the catalog (`StreamSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentledger.domain.streaming.spec import BUILTIN_PROCESSORS, StreamSpec
from agentledger.handlers.refs import CatalogError, agent_table, load_ref

__all__ = ["stream_spec"]


def stream_spec(path: Path, agent: str, value: Any) -> StreamSpec | None:
    """The agent's stream settings (None when it has none); a bad table, or a custom
    processor that does not import, is a `CatalogError`."""
    spec = agent_table(path, agent, "stream", value, StreamSpec)
    if spec is None:
        return None
    where = f"catalog {path}: agent {agent!r}: stream"
    for name in spec.processors:
        if name not in BUILTIN_PROCESSORS:
            try:
                load_ref(name)
            except CatalogError as e:
                raise CatalogError(f"{where}: processor {name!r}: {e}") from None
    return spec
