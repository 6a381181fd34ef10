"""Semantic memory: the embedder port, the texts a memory keeps, and recall for agents."""

from agentledger.domain.memory.embedding import (
    Embedder,
    EmbeddingError,
    as_unit_rows,
)
from agentledger.domain.memory.recall import (
    MemoryHit,
    Recall,
    RecallSpec,
    recall_instructions,
)

__all__ = [
    "Embedder",
    "EmbeddingError",
    "MemoryHit",
    "Recall",
    "RecallSpec",
    "as_unit_rows",
    "recall_instructions",
]
